//! Renders `docs/scenarios.md` from the rows the scenario tests wrote:
//! `scenario-report [--rows DIR] [--header FILE] [--out FILE]`.
use anyhow::{Context, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut rows = witness_tests::report::report_dir();
    let mut header: Option<PathBuf> = None;
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--rows" => rows = PathBuf::from(v),
            "--header" => header = Some(PathBuf::from(v)),
            "--out" => out = Some(PathBuf::from(v)),
            _ => anyhow::bail!("unknown option {a}"),
        }
    }
    let head = match header {
        Some(h) => std::fs::read_to_string(&h).with_context(|| format!("{}", h.display()))?,
        None => "# Scenarios with real processes\n".into(),
    };
    let list = witness_tests::report::read_rows(&rows)?;
    let generated = format!(
        "{} rows, {}",
        list.len(),
        std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    let text = witness_tests::report::render(&list, &head, &generated);
    match out {
        Some(p) => std::fs::write(&p, text)?,
        None => print!("{text}"),
    }
    Ok(())
}
