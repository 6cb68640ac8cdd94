//! Chat templates (minijinja, with Python string methods), from tokenizer_config.json or
//! chat_template.jinja, and the raw alternative.

use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
}

/// A model's chat template, ready to render.
#[derive(Debug)]
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

fn token_text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

impl ChatTemplate {
    /// The template of a model folder: `tokenizer_config.json`'s `chat_template` (a string, or a
    /// list of named templates, of which `default` is used), else `chat_template.jinja`.
    pub fn from_model_dir(dir: &Path) -> Result<ChatTemplate> {
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|source| Error::Json { path: config_path.clone(), source })?
            }
            Err(_) => serde_json::Value::Null,
        };
        let from_config = match config.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(String::from),
            _ => None,
        };
        let jinja = dir.join("chat_template.jinja");
        let source = match from_config {
            Some(s) => s,
            None if jinja.is_file() => std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?,
            None => {
                return Err(Error::Invalid(format!(
                    "{} has no chat template (no `chat_template` in tokenizer_config.json, no chat_template.jinja); use --raw",
                    dir.display()
                )))
            }
        };
        ChatTemplate::from_source(source, token_text(config.get("bos_token")), token_text(config.get("eos_token")))
    }

    /// A template from its Jinja source.
    pub fn from_source(source: String, bos: Option<String>, eos: Option<String>) -> Result<ChatTemplate> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |format: String| -> String {
            // Templates use this to print today's date; a fixed, format-independent date keeps
            // renders reproducible.
            let _ = format;
            "26 Jul 2024".to_string()
        });
        env.add_template_owned("chat", source)
            .map_err(|e| Error::Invalid(format!("chat template does not parse: {e}")))?;
        Ok(ChatTemplate { env, bos: bos.unwrap_or_default(), eos: eos.unwrap_or_default() })
    }

    /// Render `messages`, ending with the assistant's turn header when `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template("chat").map_err(|e| Error::Other(e.to_string()))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos,
                eos_token => self.eos,
            })
            .map_err(|e| Error::Invalid(format!("chat template failed: {e}")))
    }
}

/// How a user instruction becomes model input.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptFormat {
    /// Through the chat template, with an optional system prompt.
    Chat {
        /// System prompt.
        system: Option<String>,
    },
    /// The instruction as is (the research note found this half works), optionally with a
    /// trailing newline.
    Raw {
        /// Append "\n".
        trailing_newline: bool,
    },
}

/// Format one user instruction for the model.
pub fn format_prompt(template: Option<&ChatTemplate>, format: &PromptFormat, user: &str) -> Result<String> {
    match format {
        PromptFormat::Raw { trailing_newline } => {
            Ok(if *trailing_newline { format!("{user}\n") } else { user.to_string() })
        }
        PromptFormat::Chat { system } => {
            let template = template.ok_or_else(|| Error::Invalid("no chat template available; use --raw".into()))?;
            let mut messages = Vec::new();
            if let Some(system) = system {
                messages.push(Message::new("system", system));
            }
            messages.push(Message::new("user", user));
            template.render(&messages, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_with_system_and_generation_prompt() {
        let t = ChatTemplate::from_source(
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}".into(),
            None,
            None,
        )
        .unwrap();
        let text = format_prompt(Some(&t), &PromptFormat::Chat { system: Some("Be brief.".into()) }, " hi ").unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(format_prompt(None, &PromptFormat::Raw { trailing_newline: true }, "hi").unwrap(), "hi\n");
    }

    #[test]
    fn list_form_templates_and_token_objects_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "bos_token": {"content": "<s>"},
            "chat_template": [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}"}]
        });
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
        let t = ChatTemplate::from_model_dir(dir.path()).unwrap();
        assert_eq!(t.render(&[Message::new("user", "x")], true).unwrap(), "<s>x");
    }

    #[test]
    fn missing_and_raising_templates_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = ChatTemplate::from_model_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("--raw"), "{err}");
        let t = ChatTemplate::from_source("{{ raise_exception('no system role') }}".into(), None, None).unwrap();
        assert!(t.render(&[], true).unwrap_err().to_string().contains("no system role"));
    }
}
