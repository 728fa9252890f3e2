//! The `manta` command line as a user meets it: help, version, usage errors with exit code 2,
//! a filter that matches nothing, and each figure printed once.

use std::process::{Command, Output};

fn manta(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_manta")).args(args).output().expect("the manta binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn no_arguments_is_a_usage_error_and_help_describes_every_option() {
    let bare = manta(&[]);
    assert_eq!(bare.status.code(), Some(2));
    assert!(text(&bare.stderr).contains("Usage: manta <COMMAND>"), "{}", text(&bare.stderr));

    let version = manta(&["--version"]);
    assert!(version.status.success());
    assert_eq!(text(&version.stdout).trim(), format!("manta {}", env!("CARGO_PKG_VERSION")));

    let help = manta(&["microbenchmark", "--help"]);
    assert!(help.status.success());
    let help = text(&help.stdout);
    for option in ["--repeat", "--scale", "--filter", "--json", "--no-cold-start"] {
        let line = help.lines().find(|line| line.trim_start().starts_with(option)).unwrap_or_default();
        assert!(line.len() > option.len() + 10, "{option} is described: {help}");
    }

    let unknown = manta(&["microbenchmark", "--bogus"]);
    assert_eq!(unknown.status.code(), Some(2));
    let negative = manta(&["microbenchmark", "--scale", "-1"]);
    assert_eq!(negative.status.code(), Some(2));
    assert!(text(&negative.stderr).contains("not a positive number"), "{}", text(&negative.stderr));
}

#[test]
fn a_filter_that_matches_nothing_says_so_and_fails() {
    let none = manta(&["microbenchmark", "--no-cold-start", "--filter", "no_such_figure"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        text(&none.stderr).contains("no figure matches --filter \"no_such_figure\""),
        "{}",
        text(&none.stderr)
    );
}

#[test]
fn each_figure_is_printed_once() {
    let args = ["microbenchmark", "--no-cold-start", "--repeat", "1", "--scale", "0.01"];
    let run = manta(&[&args[..], &["--filter", "single_client_tasks_sync"]].concat());
    assert!(run.status.success(), "{}", text(&run.stderr));
    let (stdout, stderr) = (text(&run.stdout), text(&run.stderr));
    assert_eq!(stdout.matches("single_client_tasks_sync:").count(), 1, "stdout: {stdout}");
    assert!(!stderr.contains("single_client_tasks_sync"), "stderr repeats it: {stderr}");

    let json = manta(&[&args[..], &["--filter", "single_client_tasks_sync", "--json"]].concat());
    assert!(json.status.success(), "{}", text(&json.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&json.stdout).expect("stdout is JSON");
    assert_eq!(figures.as_array().map(Vec::len), Some(1));
    assert_eq!(figures[0]["name"], "single_client_tasks_sync");
    assert!(figures[0]["median"].as_f64().is_some_and(|median| median > 0.0));
}
