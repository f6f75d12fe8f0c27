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
    // PostgreSQL keeps no refresh time: what bluegreen recorded of its own refreshes on the
    // target (copy, each flip) says how fresh the target's materialized views are.
    let refreshed = match state::exists(&target).await {
        Ok(true) => state::matviews::last(&target, &args.run)
            .await
            .map_err(|e| Trouble::state("target", e))?,
        _ => None,
    };
    if args.json {
        let mut doc = serde_json::to_value(&plan)
            .map_err(|e| Trouble::new(format!("cannot render the plan as JSON: {e}"), ""))?;
        doc["matviews_refreshed"] =
            serde_json::json!(refreshed.as_ref().map(|r| serde_json::json!({
                "at": r.at, "side": r.side, "by": r.by, "views": r.views,
            })));
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", render::plan(&plan));
        if !plan.materialized_views.is_empty() {
            match &refreshed {
                Some(r) => println!(
                    "materialized views: last refreshed by bluegreen on {} at {} ({} views, by {})",
                    r.side, r.at, r.views, r.by
                ),
                None => println!("materialized views: not refreshed by bluegreen on the target yet (copy refreshes them, and each cutover again before its pause)"),
            }
        }
    }
    Ok(if plan.has_blockers() {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}
