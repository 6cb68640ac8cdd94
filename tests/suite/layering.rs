//! The library's dependencies point one way: a listing of which top-level module of `src/`
//! names which other (`use crate::…` and `crate::x::…` paths, outside comments and test
//! modules), checked against the layering the design states.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules `model` must not reach: it is the decoder, below everything that uses it (and above
/// `kernels`, which must reach neither it nor these).
const ABOVE_MODEL: &[&str] = &["prompts", "surgery", "search", "eval", "probe", "pipeline", "recipe", "analysis"];

/// Crates only the command line may name.
const CLI_ONLY_CRATES: &[&str] = &["clap", "indicatif"];

/// Arrows allowed although they would close a cycle, each with its reason. None today.
const ALLOWED_ARROWS: &[(&str, &str, &str)] = &[];

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its test module (`#[cfg(test)] mod …`
/// to the end of the file, where this code base keeps them).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        // Good enough for this code base: no `//` inside a string on a line that also names a module.
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The top-level modules that `code` names through `crate::`.
fn crate_references(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let preceded_by_ident = rest[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[i + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first name of each item at depth 0.
            let (mut depth, mut item_start) = (0usize, true);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String =
                            group[j..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        found.insert(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    found
        .into_iter()
        .map(|name| if name == "Error" || name == "Result" { "error".to_string() } else { name })
        .filter(|name| modules.contains(name))
        .collect()
}

/// Whether `code` names the crate `name` (`name::…` or `use name`).
fn names_crate(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = &code[i + name.len()..];
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            && (after.starts_with("::") || (code[..i].trim_end().ends_with("use") && after.starts_with([';', ' '])))
    })
}

/// The library's top-level modules, from `src/lib.rs`.
fn top_level_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")).map(|m| m.trim_end_matches(';').to_string()).collect()
}

/// The top-level module a file belongs to (`src/model/layer.rs` → `model`, `src/linalg.rs` →
/// `linalg`); None for the crate roots.
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.trim_end_matches(".rs").to_string();
    (first != "lib" && first != "main").then_some(first)
}

/// `graph[from][to]` = the files of `from` that name `to`.
fn dependency_graph() -> Graph {
    let modules = top_level_modules();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph = Graph::new();
    for file in files {
        let Some(from) = module_of(&file) else { continue };
        if from == "cli" || file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = code(&std::fs::read_to_string(&file).unwrap());
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        for to in crate_references(&text, &modules) {
            if to != from {
                graph.entry(from.clone()).or_default().entry(to).or_default().insert(rel.clone());
            }
        }
    }
    graph
}

/// A cycle through `start`, if any (depth-first over `graph` without the allowed arrows).
fn cycle_through(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn visit(graph: &Graph, at: &str, start: &str, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        for to in graph.get(at).into_iter().flat_map(|m| m.keys()) {
            if ALLOWED_ARROWS.iter().any(|(a, b, _)| *a == at && b == to) {
                continue;
            }
            if to == start {
                path.push(to.clone());
                return true;
            }
            if seen.insert(to.clone()) {
                path.push(to.clone());
                if visit(graph, to, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    visit(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

fn listing(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(from, to)| format!("{from} → {}", to.keys().cloned().collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_parser_finds_paths_groups_and_crates_and_skips_comments_and_tests() {
    let modules: BTreeSet<String> = ["model", "prompts", "surgery", "error", "linalg"].map(String::from).into();
    let text = code(
        "use crate::{linalg::Basis, model::{a, b}, Result};\n\
         // crate::surgery in a comment\n\
         let m = crate::prompts::attention_bias(x);\n\
         #[cfg(test)]\nmod tests { use crate::surgery::x; }\n",
    );
    let found = crate_references(&text, &modules);
    assert_eq!(found, ["error", "linalg", "model", "prompts"].map(String::from).into());
    assert!(names_crate("#[derive(clap::ValueEnum)]", "clap"));
    assert!(names_crate("use indicatif;", "indicatif"));
    assert!(!names_crate("let clap_like = 1; // no", "clap"));
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().entry("b".into()).or_default();
    graph.entry("b".into()).or_default().entry("a".into()).or_default();
    assert_eq!(cycle_through(&graph, "a"), Some(vec!["a".into(), "b".into(), "a".into()]));
}

#[test]
fn model_does_not_reach_the_modules_that_use_it() {
    let graph = dependency_graph();
    assert!(
        graph.get("model").is_some_and(|m| m.contains_key("arch")),
        "the listing found nothing:\n{}",
        listing(&graph)
    );
    let wrong: Vec<String> = graph
        .get("model")
        .into_iter()
        .flat_map(|m| m.iter())
        .filter(|(to, _)| ABOVE_MODEL.contains(&to.as_str()))
        .map(|(to, files)| format!("model → {to} in {}", files.iter().cloned().collect::<Vec<_>>().join(", ")))
        .collect();
    assert!(wrong.is_empty(), "{}\n\nlisting:\n{}", wrong.join("\n"), listing(&graph));
}

#[test]
fn no_cycle_between_top_level_modules() {
    let graph = dependency_graph();
    for module in graph.keys() {
        if let Some(cycle) = cycle_through(&graph, module) {
            let files: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    format!(
                        "{} → {}: {}",
                        w[0],
                        w[1],
                        graph[&w[0]][&w[1]].iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
                .collect();
            panic!("cycle {}\n{}\n\nlisting:\n{}", cycle.join(" → "), files.join("\n"), listing(&graph));
        }
    }
}

#[test]
fn only_the_command_line_names_clap_and_indicatif() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let cli = src().join("cli");
    let mut wrong = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(&cli) && **f != src().join("main.rs")) {
        let text = code(&std::fs::read_to_string(file).unwrap());
        for name in CLI_ONLY_CRATES.iter().filter(|name| names_crate(&text, name)) {
            wrong.push(format!("{} names {name}", file.strip_prefix(src()).unwrap().display()));
        }
    }
    assert!(files.len() > 50, "found only {} files under src/", files.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn kernels_are_below_the_model() {
    let graph = dependency_graph();
    let wrong: Vec<String> = graph
        .get("kernels")
        .into_iter()
        .flat_map(|m| m.iter())
        .filter(|(to, _)| *to == "model" || ABOVE_MODEL.contains(&to.as_str()))
        .map(|(to, files)| format!("kernels → {to} in {}", files.iter().cloned().collect::<Vec<_>>().join(", ")))
        .collect();
    assert!(wrong.is_empty(), "{}\n\nlisting:\n{}", wrong.join("\n"), listing(&graph));
    assert!(
        graph.get("model").is_some_and(|m| m.contains_key("kernels")),
        "the model does not use the kernels:\n{}",
        listing(&graph)
    );
}

/// Files outside `src/kernels/` allowed to hold `unsafe`, each with its reason.
const UNSAFE_OUTSIDE_KERNELS: &[(&str, &str)] =
    &[("checkpoint/shard.rs", "memory-maps the input safetensors files (memmap2's map is unsafe by nature)")];

#[test]
fn unsafe_code_lives_in_the_kernels_room() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let kernels = src().join("kernels");
    let mut wrong = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(&kernels)) {
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        let text = code(&std::fs::read_to_string(file).unwrap());
        let allowed = UNSAFE_OUTSIDE_KERNELS.iter().any(|(f, _)| *f == rel);
        for needle in ["unsafe", "asm!", "std::arch", "core::arch"] {
            if text.contains(needle) && !(needle == "unsafe" && allowed) {
                wrong.push(format!("{rel} holds `{needle}`"));
            }
        }
    }
    assert!(wrong.is_empty(), "outside src/kernels/:\n{}", wrong.join("\n"));
}
