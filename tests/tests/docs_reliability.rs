#![allow(clippy::unwrap_used, clippy::expect_used)]
//! docs/reliability.md cannot rot: every test it names (`path/file.rs::function`) must exist
//! as a test function in that file, every case of the fault table (1–38 and the air gap)
//! and of the issue 13 acceptance list must be there once, and each row must name a test or
//! say "not covered".

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// One row of a table: its first cell and the `file.rs::name` references in its cells.
#[derive(Debug)]
struct Row {
    id: String,
    tests: Vec<(String, String)>,
    not_covered: bool,
}

/// The rows of every table in `doc` (header and separator lines skipped).
fn rows(doc: &str) -> Vec<Row> {
    let mut out = Vec::new();
    for line in doc.lines() {
        let line = line.trim();
        if !line.starts_with('|') || line.starts_with("|---") || line.starts_with("| # |") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(id) = cells.first() else { continue };
        let mut tests = Vec::new();
        for cell in &cells {
            for quoted in cell.split('`').skip(1).step_by(2) {
                if let Some((file, name)) = quoted.split_once("::") {
                    if file.ends_with(".rs") {
                        tests.push((file.to_string(), name.to_string()));
                    }
                }
            }
        }
        out.push(Row {
            id: id.to_string(),
            tests,
            not_covered: cells.get(2).is_some_and(|c| c.starts_with("not covered")),
        });
    }
    out
}

/// Is `name` a test function in `source`: `fn name(` with `#[test]` or `#[tokio::test…]`
/// among the attributes and comments right above it?
fn is_test(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    let sig = format!("fn {name}(");
    lines.iter().enumerate().any(|(i, l)| {
        let l = l.trim_start();
        let decl = l.starts_with(&sig)
            || l.strip_prefix("async ")
                .is_some_and(|rest| rest.starts_with(&sig));
        decl && lines[..i]
            .iter()
            .rev()
            .map(|l| l.trim())
            .take_while(|l| l.starts_with("#[") || l.starts_with("//") || l.starts_with(')'))
            .any(|l| l.starts_with("#[test]") || l.starts_with("#[tokio::test"))
    })
}

/// Every problem with the table in `doc`, files read under `root`.
fn problems(doc: &str, root: &Path) -> Vec<String> {
    let rows = rows(doc);
    let mut found = Vec::new();
    for row in &rows {
        if row.tests.is_empty() && !row.not_covered {
            found.push(format!(
                "case {} names no test and does not say \"not covered\"",
                row.id
            ));
        }
        for (file, name) in &row.tests {
            match std::fs::read_to_string(root.join(file)) {
                Ok(src) if is_test(&src, name) => {}
                Ok(_) => found.push(format!(
                    "case {}: {file} has no test function `{name}`",
                    row.id
                )),
                Err(e) => found.push(format!("case {}: {file}: {e}", row.id)),
            }
        }
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let mut wanted: Vec<String> = (1..=38).map(|n| n.to_string()).collect();
    wanted.push("air-gap".into());
    wanted.extend((1..=7).map(|n| format!("13.{n}")));
    for w in &wanted {
        match ids.iter().filter(|id| *id == w).count() {
            1 => {}
            0 => found.push(format!("case {w} is missing from the table")),
            n => found.push(format!("case {w} is listed {n} times")),
        }
    }
    let known: BTreeSet<&String> = wanted.iter().collect();
    for id in ids {
        if !known.contains(&id.to_string()) {
            found.push(format!("unexpected row `{id}`"));
        }
    }
    found
}

#[test]
fn every_test_named_in_the_reliability_table_exists() {
    let root = repo();
    let doc = std::fs::read_to_string(root.join("docs/reliability.md"))
        .expect("docs/reliability.md exists");
    let rows = rows(&doc);
    let named: usize = rows.iter().map(|r| r.tests.len()).sum();
    assert!(
        rows.len() >= 46 && named >= 46,
        "{} rows, {named} tests",
        rows.len()
    );
    let found = problems(&doc, &root);
    assert!(
        found.is_empty(),
        "docs/reliability.md:\n{}",
        found.join("\n")
    );
}

/// The check itself can fail: a renamed test, a non-test function, a missing file, a row
/// with no test and no reason, and a missing case are each caught.
#[test]
fn the_table_check_catches_renamed_tests_and_missing_cases() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("x/tests")).unwrap();
    std::fs::write(
        dir.path().join("x/tests/a.rs"),
        "#[test]\n// why\nfn real() {}\n\n#[tokio::test(flavor = \"multi_thread\")]\nasync fn real_async() {}\n\nfn helper() {}\n",
    )
    .unwrap();
    let mut doc = String::from("| # | case | covered by | gaps |\n|---|---|---|---|\n");
    for n in 1..=38 {
        doc.push_str(&format!("| {n} | c | `x/tests/a.rs::real` | — |\n"));
    }
    doc.push_str("| air-gap | c | `x/tests/a.rs::real_async` | — |\n");
    for n in 1..=7 {
        doc.push_str(&format!("| 13.{n} | c | not covered | why |\n"));
    }
    assert_eq!(problems(&doc, dir.path()), Vec::<String>::new());

    let bad = doc
        .replace(
            "| 3 | c | `x/tests/a.rs::real` |",
            "| 3 | c | `x/tests/a.rs::renamed` |",
        )
        .replace(
            "| 4 | c | `x/tests/a.rs::real` |",
            "| 4 | c | `x/tests/a.rs::helper` |",
        )
        .replace(
            "| 5 | c | `x/tests/a.rs::real` |",
            "| 5 | c | `x/tests/gone.rs::real` |",
        )
        .replace("| 6 | c | `x/tests/a.rs::real` |", "| 6 | c | soon |")
        .replace("| 7 | c | `x/tests/a.rs::real` | — |\n", "");
    let found = problems(&bad, dir.path());
    for want in [
        "case 3: x/tests/a.rs has no test function `renamed`",
        "case 4: x/tests/a.rs has no test function `helper`",
        "case 5: x/tests/gone.rs",
        "case 6 names no test",
        "case 7 is missing",
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(want)),
            "{want}: {found:?}"
        );
    }
}
