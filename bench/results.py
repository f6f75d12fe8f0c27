"""Appending a dated entry to a section of bench/RESULTS.md (shared by the summarizers)."""


def append(record, section, intro, entry):
    """Adds the `entry` lines at the end of `section` (a "## " heading), creating the file and
    the section (with `intro` under it) when missing."""
    try:
        with open(record) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmark results\n\n"
    if section not in text.splitlines():
        text = text.rstrip("\n") + f"\n\n{section}\n\n{intro}\n"
    lines = text.splitlines()
    start = lines.index(section)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
        len(lines),
    )
    while end > start + 1 and lines[end - 1].strip() == "":
        end -= 1
    new = lines[:end] + [""] + entry + lines[end:]
    with open(record, "w") as f:
        f.write("\n".join(new).rstrip("\n") + "\n")
    print(f"\nappended to {record}")
