//! Writes the VM lab's table (the rows `tests/tests/vmlab.rs` wrote to `target/vmlab-report/`)
//! between its markers in each file given: `vmlab-report [--rows DIR] FILE...`
//! (`scripts/vmlab.sh` passes docs/scenarios.md and tests/scenarios-header.md).
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use witness_tests::vmlab;

fn main() -> Result<()> {
    let mut rows = vmlab::report_dir();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rows" {
            rows = PathBuf::from(args.next().context("--rows needs a directory")?);
        } else {
            files.push(PathBuf::from(a));
        }
    }
    let list = vmlab::read_rows(&rows)?;
    if list.is_empty() {
        bail!(
            "no VM lab rows in {}: run scripts/vmlab.sh (as root) first",
            rows.display()
        );
    }
    for f in files {
        let text = std::fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?;
        let Some(new) = vmlab::replace_section(&text, &list) else {
            bail!(
                "{} has no VM lab markers ({} ... {}): put them where the table goes",
                f.display(),
                vmlab::BEGIN_MARK,
                vmlab::END_MARK
            );
        };
        std::fs::write(&f, new).with_context(|| format!("write {}", f.display()))?;
        println!("wrote {} VM lab rows into {}", list.len(), f.display());
    }
    Ok(())
}
