//! Chat templates: the Jinja source a model ships (tokenizer_config.json `chat_template`,
//! chat_template.jinja or chat_template.json), rendered with minijinja the way Hugging Face
//! `transformers` renders it (`trim_blocks`, `lstrip_blocks`, Python string methods,
//! `raise_exception`, `strftime_now`), and the raw alternative.

use super::special_tokens::{read_json_if_present, TokenizerConfig};
use super::strftime::TemplateDate;
use crate::{Error, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }

    /// A system message.
    pub fn system(content: &str) -> Message {
        Message::new("system", content)
    }

    /// A user message.
    pub fn user(content: &str) -> Message {
        Message::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: &str) -> Message {
        Message::new("assistant", content)
    }
}

/// The name the template is registered under in its minijinja environment.
const TEMPLATE_NAME: &str = "chat_template";

/// A ChatML template, for models that ship none when the user asks for a fallback.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A model's chat template, ready to render.
#[derive(Clone)]
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    source: String,
    origin: String,
    special: BTreeMap<&'static str, String>,
    date: TemplateDate,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("special_tokens", &self.special)
            .field("date", &self.date)
            .finish()
    }
}

/// Pick the template text out of a `chat_template` value: a string, or a list of
/// `{name, template}` of which the one named `default` is used (as `transformers` does).
fn template_from_config_value(value: &Value, path: &Path) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(list) => {
            let named = |name: &str| list.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(name));
            let entry = named("default").ok_or_else(|| {
                let names: Vec<&str> = list.iter().filter_map(|t| t.get("name").and_then(Value::as_str)).collect();
                Error::Invalid(format!(
                    "{}: `chat_template` is a list of named templates ({}) without one named `default`",
                    path.display(),
                    names.join(", ")
                ))
            })?;
            entry.get("template").and_then(Value::as_str).map(String::from).ok_or_else(|| {
                Error::Invalid(format!("{}: the `default` chat template has no `template` string", path.display()))
            })
        }
        _ => Err(Error::Invalid(format!(
            "{}: `chat_template` must be a string or a list of {{name, template}} objects",
            path.display()
        ))),
    }
}

/// Python-style `raise_exception(message)`: stop rendering with the template's own message.
fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("the template raised: {message}")))
}

impl ChatTemplate {
    /// The chat template of a model folder, looked up in this order:
    /// `tokenizer_config.json` `chat_template` (a string, or the list entry named `default`),
    /// `chat_template.jinja`, `chat_template.json` (`{"chat_template": ...}`).
    /// Special tokens (`bos_token`, `eos_token`, `pad_token`, `unk_token`) come from
    /// tokenizer_config.json. Errors name the files looked at; use raw mode for models without a template.
    pub fn from_model_dir(dir: &Path) -> Result<ChatTemplate> {
        ChatTemplate::find_in_model_dir(dir)?.ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no chat template found (no `chat_template` in tokenizer_config.json, no chat_template.jinja, \
                 no chat_template.json); use raw prompts (--raw) or a fallback template",
                dir.display()
            ))
        })
    }

    /// Like [`ChatTemplate::from_model_dir`], but `Ok(None)` when the folder has no template at all.
    /// A template that exists but cannot be read or parsed is still an error.
    pub fn find_in_model_dir(dir: &Path) -> Result<Option<ChatTemplate>> {
        let config = TokenizerConfig::from_model_dir(dir)?;
        let (source, origin) = match config.as_ref().and_then(|c| c.chat_template.as_ref().map(|t| (c, t))) {
            Some((config, value)) => (template_from_config_value(value, &config.path)?, config.path.clone()),
            None => {
                let jinja = dir.join("chat_template.jinja");
                let json = dir.join("chat_template.json");
                if jinja.is_file() {
                    (std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?, jinja)
                } else if let Some(value) = read_json_if_present(&json)? {
                    let inner = value
                        .get("chat_template")
                        .ok_or_else(|| Error::Invalid(format!("{}: no `chat_template` field", json.display())))?;
                    (template_from_config_value(inner, &json)?, json)
                } else {
                    return Ok(None);
                }
            }
        };
        let config = config.unwrap_or_default();
        let mut template = ChatTemplate::compile(source, origin.display().to_string())?;
        for (name, value) in [
            ("bos_token", config.bos_token),
            ("eos_token", config.eos_token),
            ("pad_token", config.pad_token),
            ("unk_token", config.unk_token),
        ] {
            if let Some(value) = value {
                template.special.insert(name, value);
            }
        }
        Ok(Some(template))
    }

    /// A template from its Jinja source, with the given beginning- and end-of-sequence tokens.
    pub fn from_source(source: String, bos: Option<String>, eos: Option<String>) -> Result<ChatTemplate> {
        let mut template = ChatTemplate::compile(source, "inline template".into())?;
        if let Some(bos) = bos {
            template.special.insert("bos_token", bos);
        }
        if let Some(eos) = eos {
            template.special.insert("eos_token", eos);
        }
        Ok(template)
    }

    /// A plain ChatML template (`<|im_start|>role\n...<|im_end|>`), a fallback for models
    /// without their own. Only sensible when the tokenizer knows these markers.
    pub fn chatml() -> ChatTemplate {
        // CHATML_TEMPLATE is a constant known to parse; a failure here is a bug in scalpel.
        ChatTemplate::compile(CHATML_TEMPLATE.into(), "built-in ChatML template".into())
            .expect("the built-in ChatML template parses")
    }

    fn compile(source: String, origin: String) -> Result<ChatTemplate> {
        let mut env = minijinja::Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks; without them, templates written
        // over several lines emit stray newlines and spaces.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        // A template is code from the model's files: bound its work (a loop that never ends
        // runs out of fuel) and, in `render`, its output.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| Error::Invalid(format!("{origin}: the chat template does not parse: {e}")))?;
        let mut template =
            ChatTemplate { env, source, origin, special: BTreeMap::new(), date: TemplateDate::REPRODUCIBLE };
        template.set_date(TemplateDate::REPRODUCIBLE);
        Ok(template)
    }

    /// Use `date` for `strftime_now` (default: [`TemplateDate::REPRODUCIBLE`], so renders do not
    /// change from day to day; pass [`TemplateDate::now()`] for today's date).
    pub fn with_date(mut self, date: TemplateDate) -> ChatTemplate {
        self.set_date(date);
        self
    }

    fn set_date(&mut self, date: TemplateDate) {
        self.date = date;
        self.env.add_function("strftime_now", move |format: String| date.format(&format));
    }

    /// Set or replace a special token variable (`bos_token`, `eos_token`, `pad_token`, `unk_token`).
    pub fn with_special_token(mut self, name: &'static str, value: &str) -> ChatTemplate {
        self.special.insert(name, value.to_string());
        self
    }

    /// Set a boolean template variable that every render sees (e.g. `enable_thinking`).
    pub fn with_flag(mut self, name: &'static str, value: bool) -> ChatTemplate {
        self.env.add_global(name, minijinja::Value::from(value));
        self
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from (a file path, or a description).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The beginning-of-sequence token text, when known.
    pub fn bos_token(&self) -> Option<&str> {
        self.special.get("bos_token").map(String::as_str)
    }

    /// The end-of-sequence token text, when known.
    pub fn eos_token(&self) -> Option<&str> {
        self.special.get("eos_token").map(String::as_str)
    }

    /// Render `messages`; with `add_generation_prompt` the text ends with the assistant's turn
    /// header, ready for the model to answer. The variables are `messages`,
    /// `add_generation_prompt` and the known special tokens; unknown variables are undefined
    /// (false in tests, empty when printed), as in `transformers`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| Error::Other(e.to_string()))?;
        let mut context: BTreeMap<&str, minijinja::Value> = BTreeMap::new();
        context.insert("messages", minijinja::Value::from_serialize(messages));
        context.insert("add_generation_prompt", minijinja::Value::from(add_generation_prompt));
        for (name, value) in &self.special {
            context.insert(name, minijinja::Value::from(value.as_str()));
        }
        let limit = TEMPLATE_OUTPUT + messages.iter().map(|m| m.content.len()).sum::<usize>();
        let mut out = CappedWriter { text: Vec::new(), limit, over: false };
        if let Err(e) = template.render_captured_to(context, &mut out) {
            if out.over {
                return Err(Error::Invalid(format!(
                    "{}: the chat template's output grew beyond {} MB; refusing it",
                    self.origin,
                    limit >> 20
                )));
            }
            if e.kind() == minijinja::ErrorKind::OutOfFuel {
                return Err(Error::Invalid(format!(
                    "{}: the chat template did not finish within its work limit ({TEMPLATE_FUEL} steps); refusing it",
                    self.origin
                )));
            }
            return Err(Error::Invalid(format!("{}: rendering the chat template failed: {e}", self.origin)));
        }
        String::from_utf8(out.text)
            .map_err(|_| Error::Invalid(format!("{}: the chat template's output is not UTF-8", self.origin)))
    }
}

/// Work allowed for one render of a chat template (minijinja fuel: about one unit per
/// instruction; real templates need a few thousand per message).
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// Output allowed for one render beyond the messages' own text.
pub const TEMPLATE_OUTPUT: usize = 1 << 20;

/// Collects a render's output and fails once it passes `limit`.
struct CappedWriter {
    text: Vec<u8>,
    limit: usize,
    over: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.limit {
            self.over = true;
            return Err(std::io::Error::other("chat template output limit"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a user instruction becomes model input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptFormat {
    /// Through the chat template, with an optional system prompt.
    Chat {
        /// System prompt.
        system: Option<String>,
    },
    /// The instruction as is (no template, the tokenizer adds its usual special tokens),
    /// optionally with a trailing newline.
    Raw {
        /// Append "\n".
        trailing_newline: bool,
    },
}

/// The format as the command line selects it, the spelling records keep: `chat` (the default:
/// no flag), `--system "TEXT"` (the text JSON-quoted), `--raw`, `--raw --no-newline`.
impl std::fmt::Display for PromptFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PromptFormat::Chat { system: None } => f.write_str("chat"),
            PromptFormat::Chat { system: Some(text) } => {
                write!(f, "--system {}", serde_json::Value::String(text.clone()))
            }
            PromptFormat::Raw { trailing_newline: true } => f.write_str("--raw"),
            PromptFormat::Raw { trailing_newline: false } => f.write_str("--raw --no-newline"),
        }
    }
}

impl PromptFormat {
    /// Whether this format renders through a chat template.
    pub fn uses_template(&self) -> bool {
        matches!(self, PromptFormat::Chat { .. })
    }

    /// Whether the tokenizer should add its own special tokens (BOS) when encoding text of this
    /// format. Templates write their special tokens themselves, so this is false for chat
    /// (as `apply_chat_template(tokenize=True)` does); a second BOS would change activations.
    pub fn add_special_tokens(&self) -> bool {
        !self.uses_template()
    }
}

/// Format one user instruction for the model.
///
/// Chat format: `[system?, user]` rendered with the generation prompt. When the template refuses
/// a system message (Gemma's raise "System role not supported"), the system prompt is put in
/// front of the user message instead, with a warning.
pub fn format_prompt(template: Option<&ChatTemplate>, format: &PromptFormat, user: &str) -> Result<String> {
    match format {
        PromptFormat::Raw { trailing_newline } => {
            Ok(if *trailing_newline { format!("{user}\n") } else { user.to_string() })
        }
        PromptFormat::Chat { system } => {
            let template = template.ok_or_else(|| {
                Error::Invalid(
                    "chat format asked for, but no chat template is available; use raw prompts (--raw)".into(),
                )
            })?;
            let Some(system) = system else {
                return template.render(&[Message::user(user)], true);
            };
            match template.render(&[Message::system(system), Message::user(user)], true) {
                Ok(text) => Ok(text),
                Err(first) => {
                    let merged = format!("{system}\n\n{user}");
                    match template.render(&[Message::user(&merged)], true) {
                        Ok(text) => {
                            tracing::warn!(
                                "{}: the template rejects system messages ({first}); the system prompt is prepended to the user message",
                                template.origin()
                            );
                            Ok(text)
                        }
                        Err(_) => Err(first),
                    }
                }
            }
        }
    }
}
