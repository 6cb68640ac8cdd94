//! Small functions shared by the subcommands.

use anyhow::Context;
use scalpel::arch::WriterKind;
use scalpel::checkpoint::{resolve_model, Hub, ModelDir, StagedOutput};
use std::path::{Path, PathBuf};

use super::runtime::{InterventionArgs, RunArgs};
use scalpel::eval::{Loaded, OnDemand};
use scalpel::model::Interventions;

/// Resolve (local folder, cache or hub) and open a model.
pub fn open_model(model: &str) -> anyhow::Result<ModelDir> {
    let dir: PathBuf = resolve_model(model, &Hub::from_env())?;
    ModelDir::open(&dir).with_context(|| format!("opening model {model}"))
}

/// `model` (already opened, so that a wrong path fails at once) as a source that loads its
/// decoder when it is measured and drops it after; `intervene` builds its interventions.
pub fn on_demand<'a>(
    name: &str,
    model: ModelDir,
    run: &'a RunArgs,
    intervene: Option<&'a InterventionArgs>,
) -> OnDemand<'a> {
    let error = |e: anyhow::Error| scalpel::Error::Other(format!("{e:#}"));
    OnDemand {
        name: name.to_string(),
        load: Box::new(move || {
            let (decoder, encoder) = run.load(&model).map_err(error)?;
            let interventions = match intervene {
                Some(i) => i.build(&decoder).map_err(error)?,
                None => Interventions::none(),
            };
            Ok(Loaded { decoder, encoder, interventions })
        }),
    }
}

/// A writer kind as the command line spells it (`--targets embed,attn,mlp,ple`); clap parses the
/// list, the library keeps its own [`WriterKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Target {
    /// The token embedding.
    Embed,
    /// The attention output projections.
    Attn,
    /// The MLP output projections.
    Mlp,
    /// The per-layer input projections (Gemma 4's E models; other models have none).
    Ple,
}

impl From<Target> for WriterKind {
    fn from(target: Target) -> WriterKind {
        match target {
            Target::Embed => WriterKind::Embed,
            Target::Attn => WriterKind::Attn,
            Target::Mlp => WriterKind::Mlp,
            Target::Ple => WriterKind::PerLayer,
        }
    }
}

/// `--targets` as writer kinds, sorted, without duplicates.
pub fn writer_kinds(targets: &[Target]) -> anyhow::Result<Vec<WriterKind>> {
    let mut kinds: Vec<WriterKind> = targets.iter().map(|&t| t.into()).collect();
    kinds.sort();
    kinds.dedup();
    anyhow::ensure!(!kinds.is_empty(), "--targets is empty (choose from embed, attn, mlp, ple)");
    Ok(kinds)
}

/// Tell the user that an old spelling still works but is going away, and what to write instead.
pub fn deprecated(old: &str, new: &str) {
    eprintln!("warning: {old} is deprecated and will be removed; write {new}");
}

/// The default `--max-tokens` of every command, one per purpose (docs/usage.md lists them).
pub mod answer_tokens {
    /// Answers a judge reads (`eval`, `compare`, the finalists of `search`, a recipe's eval):
    /// long enough to get past an opening that hedges.
    pub const JUDGED: usize = 128;
    /// Stage-1 answers of `search`: a refusal shows in its first tokens, and a row stops at
    /// its first refusal marker.
    pub const SHORT: usize = 16;
    /// Open-ended answers (`generate`, `chat`); an answer stops earlier at the end of its turn.
    pub const OPEN: usize = 512;
}

/// Where `eval` and `compare` write their reports: a folder (`--out DIR`, the reports inside it
/// by fixed names, staged and renamed into place as every other output folder), or one file
/// (`--out FILE.md`, the old spelling, kept for one release).
pub enum ReportsOut {
    /// The staged folder.
    Folder(StagedOutput),
    /// The old spelling: one file, markdown (JSON for a `.json` path).
    File(PathBuf),
}

/// Whether `out` is an old-style report file rather than a folder.
fn is_report_file(out: &Path) -> bool {
    out.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "md" | "json" | "txt"))
}

impl ReportsOut {
    /// Prepare `--out` for `command`'s reports (`COMMAND.md`, `COMMAND.json`) before any work,
    /// so that an existing folder without `force`, or one that overlaps `inputs`, is refused at
    /// once. An old-style file path warns and is written as before.
    pub fn prepare(out: &Path, command: &str, inputs: &[&Path], force: bool) -> anyhow::Result<ReportsOut> {
        if is_report_file(out) {
            deprecated(
                &format!("--out {} (a file)", out.display()),
                &format!("--out DIR, which holds {command}.md and {command}.json"),
            );
            return Ok(ReportsOut::File(out.to_path_buf()));
        }
        Ok(ReportsOut::Folder(StagedOutput::new(out, inputs, force)?))
    }

    /// Write the reports of `command` and return the markdown one's path.
    pub fn write(self, command: &str, markdown: &str, json: &serde_json::Value) -> anyhow::Result<PathBuf> {
        match self {
            ReportsOut::File(path) => {
                let text = if path.extension().is_some_and(|e| e == "json") {
                    serde_json::to_string_pretty(json)? + "\n"
                } else {
                    markdown.to_string()
                };
                std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                Ok(path)
            }
            ReportsOut::Folder(staged) => {
                let (md, js) = (format!("{command}.md"), format!("{command}.json"));
                for (name, text) in [(&md, markdown.to_string()), (&js, serde_json::to_string_pretty(json)? + "\n")] {
                    let path = staged.path().join(name);
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                }
                Ok(staged.commit()?.join(md))
            }
        }
    }
}

/// clap parser: a whole number of at least 1.
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn number(text: &str) -> Result<f64, String> {
    let v: f64 = text.parse().map_err(|e: std::num::ParseFloatError| e.to_string())?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("must be a finite number (not {text})"))
    }
}

/// clap parser: a finite number.
pub fn finite(text: &str) -> Result<f64, String> {
    number(text)
}

/// clap parser: a finite number of at least 0.
pub fn non_negative(text: &str) -> Result<f64, String> {
    number(text).and_then(|v| if v >= 0.0 { Ok(v) } else { Err("must be at least 0".into()) })
}

/// clap parser: a number in (0, 1].
pub fn fraction(text: &str) -> Result<f64, String> {
    number(text).and_then(|v| if v > 0.0 && v <= 1.0 { Ok(v) } else { Err("must lie in (0, 1]".into()) })
}

/// clap parser: a number in [0, 1].
pub fn rate(text: &str) -> Result<f64, String> {
    number(text).and_then(|v| if (0.0..=1.0).contains(&v) { Ok(v) } else { Err("must lie in [0, 1]".into()) })
}

/// clap parser: a finite number above 0.
pub fn positive_f32(text: &str) -> Result<f32, String> {
    number(text).and_then(|v| if v > 0.0 { Ok(v as f32) } else { Err("must be above 0".into()) })
}

/// clap parser: a KL cap, a number above 0, or `none` / `inf` for no cap.
pub fn kl_cap(text: &str) -> Result<KlCap, String> {
    if matches!(text, "none" | "inf") {
        return Ok(KlCap(None));
    }
    number(text).and_then(|v| if v > 0.0 { Ok(KlCap(Some(v))) } else { Err("must be above 0 (or `none`)".into()) })
}

/// A parsed `--max-kl` (None: no cap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlCap(pub Option<f64>);

impl std::fmt::Display for KlCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("none"),
        }
    }
}

/// Human-readable byte count.
pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

/// Prints an answer to the terminal as it is generated and stops it at a stop string.
///
/// The whole answer is decoded after every token (so characters split across tokens print
/// correctly); the last few bytes are held back while they could still begin a stop string, and
/// nothing from a stop string on is printed.
pub struct StreamPrinter<'a> {
    encoder: &'a scalpel::prompts::PromptEncoder,
    stops: &'a [String],
    ids: Vec<u32>,
    text: String,
    printed: usize,
}

impl<'a> StreamPrinter<'a> {
    /// A printer for `encoder`'s tokens that stops at any of `stops`.
    pub fn new(encoder: &'a scalpel::prompts::PromptEncoder, stops: &'a [String]) -> Self {
        StreamPrinter { encoder, stops, ids: Vec::new(), text: String::new(), printed: 0 }
    }

    /// The token callback for `generate`: returns `true` (stop) once a stop string appeared.
    pub fn on_token(&mut self, token: u32) -> bool {
        self.ids.push(token);
        if let Ok(text) = self.encoder.decode(&self.ids) {
            self.text = text;
        }
        let (end, stopped) = printable(&self.text, self.stops);
        self.print_to(end);
        stopped
    }

    /// Print what was held back and return the answer (cut before a stop string).
    pub fn finish(mut self) -> String {
        let end = match printable(&self.text, self.stops) {
            (at, true) => at,
            (_, false) => self.text.len(),
        };
        self.print_to(end);
        self.text.truncate(end);
        self.text
    }

    fn print_to(&mut self, end: usize) {
        use std::io::Write;
        if end > self.printed && self.text.is_char_boundary(self.printed) && self.text.is_char_boundary(end) {
            let mut out = std::io::stdout();
            let _ = write!(out, "{}", &self.text[self.printed..end]);
            let _ = out.flush();
            self.printed = end;
        }
    }
}

/// How much of `text` can be shown, and whether a stop string was found: up to the first stop
/// string, else all but a tail that could still grow into one (cut back to a character boundary).
fn printable(text: &str, stops: &[String]) -> (usize, bool) {
    if let Some(at) = stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min() {
        return (at, true);
    }
    let hold = stops.iter().map(String::len).max().unwrap_or(0).saturating_sub(1);
    let mut end = text.len().saturating_sub(hold);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (end, false)
}

/// A clap parser for a library enum's names ([`scalpel::names::Named`]): `--help` lists the
/// names, aliases parse but stay unlisted.
pub fn named<T: scalpel::names::Named + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let values = T::NAMES.iter().enumerate().map(|(i, (name, _))| PossibleValue::new(*name).hide(T::is_alias(i)));
    PossibleValuesParser::new(values).map(|name| T::from_name(&name).expect("a name from the table"))
}

/// The command line as an edit record keeps it: verbatim with `record_paths`; otherwise the
/// program as `scalpel` and every argument that is a local path (absolute, `./…`, `../…`, `~…`,
/// or one that exists) as its file name, also in `--flag=PATH` form, so that a published
/// checkpoint does not reveal the folders of the machine that made it.
pub fn recorded_command(args: &[String], record_paths: bool) -> String {
    if record_paths {
        return args.join(" ");
    }
    let name_only = |value: &str| -> Option<String> {
        let path = std::path::Path::new(value);
        let local = path.is_absolute()
            || ["./", "../", "~"].iter().any(|p| value.starts_with(p))
            || path.symlink_metadata().is_ok();
        local.then(|| path.file_name().map_or_else(|| ".".to_string(), |n| n.to_string_lossy().into_owned()))
    };
    let rest = args.iter().skip(1).map(|arg| match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => match name_only(value) {
            Some(name) => format!("{flag}={name}"),
            None => arg.clone(),
        },
        _ if arg.starts_with('-') => arg.clone(),
        _ => name_only(arg).unwrap_or_else(|| arg.clone()),
    });
    std::iter::once("scalpel".to_string()).chain(rest).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::{answer_tokens, printable, recorded_command};

    #[test]
    fn the_library_defaults_are_the_answer_lengths_of_the_command_line() {
        let search = scalpel::search::SearchSettings::default();
        assert_eq!(search.answers.max_tokens, answer_tokens::SHORT);
        assert_eq!(search.final_max_tokens, answer_tokens::JUDGED);
        assert_eq!(scalpel::recipe::EvalSection::default().max_tokens, answer_tokens::JUDGED);
    }

    #[test]
    fn stops_before_a_stop_string_and_holds_back_a_possible_start() {
        let stops = vec!["\nUser:".to_string(), "###".to_string()];
        // "\nUser:" is 6 bytes, so the last 5 wait.
        assert_eq!(printable("Hello there", &stops), ("Hello ".len(), false));
        assert_eq!(printable("Hello\nUser: hi", &stops), (5, true));
        assert_eq!(printable("a ### b \nUser:", &stops), (2, true));
        assert_eq!(printable("abc", &[]), (3, false));
        // Never cuts inside a character.
        assert_eq!(printable("ééééé", &stops), (4, false));
    }

    #[test]
    fn recorded_commands_keep_names_not_paths() {
        let args: Vec<String> = [
            "/opt/bin/scalpel",
            "ablate",
            "/home/a/models/m",
            "--directions=/home/a/d.safetensors",
            "--out",
            "../x/out",
            "owner/name",
            "--strength",
            "0.5",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            recorded_command(&args, false),
            "scalpel ablate m --directions=d.safetensors --out out owner/name --strength 0.5"
        );
        assert_eq!(recorded_command(&args, true), args.join(" "));
    }
}
