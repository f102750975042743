//! `deploy --watch`: live progress per step until the deployment ends.

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rp_proto::release::v1 as pb;
use tonic::Streaming;

use crate::output::Format;

fn label(step: &pb::DeploymentStep) -> String {
    match step.kind.as_str() {
        "approval" => format!("step {} · approval before the switch", step.index + 1),
        "switch" => {
            format!("step {} · switch to 100%, keep the old version {}s", step.index + 1, step.hold_seconds)
        }
        _ => format!("step {} · {:>3}% for {}s", step.index + 1, step.weight, step.hold_seconds),
    }
}

/// Follows the watch stream; returns the last state seen. With `--output json` nothing is drawn.
pub async fn follow(mut stream: Streaming<pb::Deployment>, format: Format) -> anyhow::Result<pb::Deployment> {
    let multi = MultiProgress::with_draw_target(
        if format == Format::Table && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    let plain = format == Format::Table && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let style = ProgressStyle::with_template("{prefix:.bold} {bar:30.cyan/blue} {pos:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut bars: HashMap<i32, ProgressBar> = HashMap::new();
    let mut last: Option<pb::Deployment> = None;
    let mut last_line = String::new();
    while let Some(update) = stream.message().await.map_err(crate::status_error)? {
        for step in &update.steps {
            let bar = bars.entry(step.index).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(100));
                bar.set_style(style.clone());
                bar.set_prefix(label(step));
                bar
            });
            let done = matches!(step.status.as_str(), "completed" | "skipped");
            let position = if step.index == update.current_step && !done {
                update.weight
            } else if done {
                step.weight
            } else {
                0
            };
            bar.set_position(position.clamp(0, 100) as u64);
            bar.set_message(if step.index == update.current_step && !done {
                update.phase.clone()
            } else {
                step.status.clone()
            });
        }
        let line = format!(
            "{} · step {}/{} · {}% · {}",
            update.state,
            update.current_step + 1,
            update.steps.len(),
            update.weight,
            update.phase
        );
        if plain && line != last_line {
            // Not a terminal (CI logs): one line per change instead of bars.
            eprintln!("{line}");
            last_line = line;
        }
        last = Some(update);
    }
    for bar in bars.values() {
        bar.finish();
    }
    let last = last.ok_or_else(|| anyhow::anyhow!("the deployment stream ended without an update"))?;
    if format == Format::Table {
        let ending = match last.state.as_str() {
            "succeeded" => format!("{} {} is live in {}", last.app, last.version, last.environment),
            state => format!("deployment {state}: {}", last.failure_reason),
        };
        println!("{ending}");
    }
    Ok(last)
}
