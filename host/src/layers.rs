//! The dependency direction, as a table, and the test that holds the code
//! to it: a module may name (`crate::x`) only modules of a lower layer.
//!
//! http / push / bets / guests / feed → router → worker → {sandbox,
//! journal, store, supervisor, metrics}. A lower layer that needs to tell an
//! upper one something defines a trait or a channel the upper one
//! implements (e.g. [`crate::worker::Observer`]).

/// Layers, lowest first. A module appears once. The last layer holds the
/// edges (HTTP, the operator console, the simulator, configuration,
/// assembling the server).
pub const LAYERS: &[&[&str]] = &[
    &["passthrough"],
    &[
        "metrics",
        "deflate",
        "supervisor",
        "journal",
        "provider_api",
        "names",
        "auth",
        "resident",
        "realtime",
    ],
    &["sandbox", "store", "producers", "reference", "cluster"],
    &["worker"],
    &["router"],
    &["feed", "bets", "guests"],
    &["push"],
    &["http", "ops", "listen", "sim", "config", "server"],
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
    use std::path::{Path, PathBuf};

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|l| l.contains(&module))
    }

    /// Source files of the library below `src/`, with their module.
    fn files(dir: &Path, out: &mut Vec<(String, PathBuf)>) {
        for entry in std::fs::read_dir(dir)
            .expect("src dir")
            .map(|e| e.expect("entry").path())
        {
            if entry.is_dir() {
                files(&entry, out);
            } else if entry.extension().is_some_and(|e| e == "rs") {
                let rel = entry
                    .strip_prefix(src())
                    .expect("below src")
                    .to_string_lossy()
                    .into_owned();
                let module = rel.split(['/', '.']).next().unwrap_or_default().to_owned();
                out.push((module, entry));
            }
        }
    }

    fn src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    /// Modules named as `crate::x` in non-test code (comments and doc
    /// links aside).
    fn named(text: &str) -> Vec<String> {
        let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code: String = before_tests
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut out = Vec::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(stripped) = rest.strip_prefix('{') {
                out.extend(
                    stripped
                        .split('}')
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .map(|s| s.trim().split("::").next().unwrap_or_default().to_owned()),
                );
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                out.push(rest[..end].to_owned());
            }
        }
        out
    }

    #[test]
    fn dependencies_point_one_way() {
        let mut all = Vec::new();
        files(&src(), &mut all);
        let mut wrong = Vec::new();
        for (module, path) in &all {
            let Some(mine) = layer_of(module) else { continue };
            if path.file_name().is_some_and(|f| f == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(path).expect("readable source");
            for other in named(&text) {
                if other == *module || other.is_empty() {
                    continue;
                }
                // The edges (the top layer) may use each other and the
                // crate root (`Ready`, `Server`); nothing below may.
                let edge = mine == LAYERS.len() - 1;
                let theirs = layer_of(&other).unwrap_or(LAYERS.len() - 1);
                if theirs > mine || (theirs == mine && !edge) {
                    wrong.push(format!("{} names crate::{other}", path.display()));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "lower modules reach up (see layers.rs):\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn the_check_sees_an_upward_import() {
        assert_eq!(
            named("use crate::bets::Owners;\nuse crate::{router, store::X};"),
            ["bets", "router", "store"]
        );
        assert!(layer_of("bets") > layer_of("worker"));
    }

    #[test]
    fn every_module_of_the_library_has_a_layer() {
        let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
        for line in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
            let m = line.trim_end_matches(';');
            assert!(
                m == "layers" || layer_of(m).is_some(),
                "module {m} has no layer in layers.rs"
            );
        }
    }
}
