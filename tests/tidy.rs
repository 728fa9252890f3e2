//! House rules checked on every test run: each Rust file says what it is for in a `//!` line,
//! and no stub macro is left in code.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name == "target" || name.starts_with('.') || name == "corpus" || name == "artifacts" {
                continue;
            }
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn workspace_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(Path::new(env!("CARGO_MANIFEST_DIR")), &mut files);
    assert!(files.len() > 20, "the walk found only {} files: is it looking in the right place?", files.len());
    files
}

#[test]
fn every_rust_file_starts_with_a_module_doc_line() {
    let missing: Vec<String> = workspace_files()
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            !text.lines().find(|line| !line.trim().is_empty()).is_some_and(|line| line.starts_with("//!"))
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` line saying what they are for:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_stub_macros_in_code() {
    let stubs = ["todo", "unimplemented"].map(|name| format!("{name}!("));
    let offenders: Vec<String> = workspace_files()
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            stubs.iter().any(|stub| text.contains(stub.as_str()))
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "stubs left in:\n{}", offenders.join("\n"));
}

/// The README's one-screen program is `examples/one_screen.rs` word for word, so that what a
/// new user copies is what CI compiles without warnings and runs.
#[test]
fn the_readme_shows_the_one_screen_example_as_it_is() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/one_screen.rs")).unwrap();
    let begin = example.find("// README: begin\n").expect("a begin marker") + "// README: begin\n".len();
    let end = example.find("// README: end").expect("an end marker");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```rust\n{}```", &example[begin..end])),
        "README.md's \"In one screen\" block differs from examples/one_screen.rs"
    );
}
