//! Feeds arbitrary bytes, cut into arbitrary CopyData messages, to verify's COPY row
//! splitter in both formats: it must never panic, and the rows it returns never hold more
//! bytes than the stream it accepted.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use verify::copybin::{Format, RowSplitter};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    for format in [Format::Binary, Format::Text] {
        let mut s = RowSplitter::new(format);
        let mut rows: Vec<u8> = Vec::new();
        let mut ok = true;
        for part in body.chunks(step) {
            if s.push(Bytes::copy_from_slice(part)).is_err() {
                ok = false;
                break;
            }
            for r in s.take().iter() {
                rows.extend_from_slice(r);
            }
        }
        if ok {
            if let Ok(last) = s.finish() {
                for r in last.iter() {
                    rows.extend_from_slice(r);
                }
                // Rows are slices of the stream: never more bytes than came in.
                assert!(rows.len() <= body.len());
            }
        }
    }
});
