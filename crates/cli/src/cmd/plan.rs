//! `bluegreen plan`: what the migration will do and what blocks it.

use catalog::PlanOptions;

use crate::args::PlanArgs;
use crate::config::Settings;
use crate::trouble::Trouble;
use crate::{render, Outcome};

pub async fn run(args: PlanArgs, settings: &Settings) -> Result<Outcome, Trouble> {
    let profile = super::read_profile(args.profile.as_deref())?;
    let ((source_spec, source), (target_spec, target)) = super::connect_both(settings).await?;
    let opts = PlanOptions {
        schemas: if args.schemas.is_empty() {
            settings.schemas.clone()
        } else {
            args.schemas
        },
        profile,
    };
    let mut plan = catalog::build_plan(
        &source,
        source_spec.redacted(),
        &target,
        target_spec.redacted(),
        &opts,
    )
    .await
    .map_err(|e| Trouble::catalog("plan", e))?;
    copy::names::validate_run(&args.run).map_err(Trouble::copy)?;
    if let Some(f) = copy::name_in_use(&source, &target, &args.run)
        .await
        .map_err(Trouble::copy)?
    {
        plan.findings.push(f);
    }
    if args.json {
        let json = serde_json::to_string_pretty(&plan)
            .map_err(|e| Trouble::new(format!("cannot render the plan as JSON: {e}"), ""))?;
        println!("{json}");
    } else {
        print!("{}", render::plan(&plan));
    }
    Ok(if plan.has_blockers() {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}
