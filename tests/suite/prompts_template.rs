//! Chat templates: family-style templates written here, rendered like `transformers` does.

use scalpel::prompts::{format_prompt, ChatTemplate, Message, PromptFormat, TemplateDate};
use std::path::Path;

const CHATML_QWEN: &str = r#"{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- else %}
    {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role != 'system' %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

const LLAMA31: &str = r#"{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "01 Jan 2000" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

const GEMMA2: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

const PHI3: &str = "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

fn template(source: &str) -> ChatTemplate {
    ChatTemplate::from_source(source.to_string(), Some("<s>".into()), Some("</s>".into())).unwrap()
}

fn chat(system: Option<&str>) -> PromptFormat {
    PromptFormat::Chat { system: system.map(String::from) }
}

#[test]
fn chatml_renders_default_system_turns_and_generation_prompt() {
    let t = template(CHATML_QWEN);
    let with = t.render(&[Message::user("Hi there")], true).unwrap();
    assert_eq!(
        with,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    );
    let without = t.render(&[Message::user("Hi there")], false).unwrap();
    assert_eq!(format!("{without}<|im_start|>assistant\n"), with);
    let own_system = format_prompt(Some(&t), &chat(Some("Be brief.")), "Hi").unwrap();
    assert!(own_system.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"));
    assert_eq!(own_system.matches("<|im_start|>system").count(), 1);
}

#[test]
fn llama3_puts_bos_once_and_trims_content() {
    let t = template(LLAMA3);
    let text = format_prompt(Some(&t), &chat(Some("sys")), "  question \n").unwrap();
    assert_eq!(
        text,
        "<s><|start_header_id|>system<|end_header_id|>\n\nsys<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nquestion<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(text.matches("<s>").count(), 1);
}

#[test]
fn llama31_prints_a_reproducible_date_unless_told_otherwise() {
    let t = template(LLAMA31);
    let text = format_prompt(Some(&t), &chat(None), "hello").unwrap();
    assert_eq!(
        text,
        "<s><|start_header_id|>system<|end_header_id|>\n\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    let dated = t.clone().with_date(TemplateDate::from_unix_seconds(0));
    let text = format_prompt(Some(&dated), &chat(Some("  Be kind. ")), "hello").unwrap();
    assert!(text.contains("Today Date: 01 Jan 1970\n\nBe kind.<|eot_id|><|start_header_id|>user"), "{text}");
}

#[test]
fn gemma_maps_roles_and_folds_a_rejected_system_prompt_into_the_user_turn() {
    let t = template(GEMMA2);
    let text = format_prompt(Some(&t), &chat(None), "Why is the sky blue?").unwrap();
    assert_eq!(text, "<s><start_of_turn>user\nWhy is the sky blue?<end_of_turn>\n<start_of_turn>model\n");
    let conversation = [Message::user("a"), Message::assistant("b"), Message::user("c")];
    let rendered = t.render(&conversation, false).unwrap();
    assert!(rendered.contains("<start_of_turn>model\nb<end_of_turn>\n<start_of_turn>user\nc"));
    assert!(!rendered.ends_with("<start_of_turn>model\n"));
    // The template raises on a system message; format_prompt merges it into the user message.
    let direct = t.render(&[Message::system("S"), Message::user("U")], true).unwrap_err().to_string();
    assert!(direct.contains("System role not supported"), "{direct}");
    let merged = format_prompt(Some(&t), &chat(Some("S")), "U").unwrap();
    assert_eq!(merged, "<s><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n");
    // A raise unrelated to the system prompt is reported as is.
    let err = t.render(&[Message::user("a"), Message::user("b")], true).unwrap_err().to_string();
    assert!(err.contains("Conversation roles must alternate"), "{err}");
}

#[test]
fn mistral_wraps_inst_and_has_no_generation_prompt() {
    let t = template(MISTRAL);
    let with = t.render(&[Message::user("hi")], true).unwrap();
    assert_eq!(with, "<s>[INST] hi [/INST]");
    assert_eq!(t.render(&[Message::user("hi")], false).unwrap(), with);
    let turns = t.render(&[Message::user("a"), Message::assistant("b"), Message::user("c")], true).unwrap();
    assert_eq!(turns, "<s>[INST] a [/INST]b</s>[INST] c [/INST]");
}

#[test]
fn phi3_ends_with_assistant_marker_or_eos() {
    let t = template(PHI3);
    let with = format_prompt(Some(&t), &chat(Some("sys")), "hi").unwrap();
    assert_eq!(with, "<|system|>\nsys<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n");
    assert_eq!(t.render(&[Message::user("hi")], false).unwrap(), "<|user|>\nhi<|end|>\n</s>");
}

#[test]
fn python_string_methods_and_block_whitespace_follow_transformers() {
    let t = template(
        "{% for m in messages %}\n  {% if m.content.startswith('!') %}\nCMD {{ m.content[1:].strip().upper() }}\n  {% else %}\n{{ m.role }}: {{ m.content.strip() }}\n  {% endif %}\n{% endfor %}",
    );
    let text = t.render(&[Message::user("  hello  "), Message::user("!go ")], false).unwrap();
    // trim_blocks drops the newline after a block tag, lstrip_blocks the spaces before one.
    assert_eq!(text, "user: hello\nCMD GO\n");
}

#[test]
fn undefined_special_tokens_render_empty() {
    let t = ChatTemplate::from_source("[{{ bos_token }}|{{ eos_token }}]{{ messages[0].content }}".into(), None, None)
        .unwrap();
    assert_eq!(t.render(&[Message::user("x")], true).unwrap(), "[|]x");
    assert_eq!(t.bos_token(), None);
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn model_dir_template_string_with_token_objects() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "bos_token": {"content": "<|begin_of_text|>", "lstrip": false},
        "eos_token": "<|eot_id|>",
        "chat_template": LLAMA3,
    });
    write(dir.path(), "tokenizer_config.json", &config.to_string());
    let t = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(t.bos_token(), Some("<|begin_of_text|>"));
    assert_eq!(t.eos_token(), Some("<|eot_id|>"));
    let text = t.render(&[Message::user("x")], true).unwrap();
    assert!(text.starts_with("<|begin_of_text|><|start_header_id|>user"), "{text}");
    assert!(t.origin().ends_with("tokenizer_config.json"));
}

#[test]
fn model_dir_list_form_picks_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "bos_token": "<s>",
        "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}"},
            {"name": "rag", "template": "RAG"}
        ]
    });
    write(dir.path(), "tokenizer_config.json", &config.to_string());
    let t = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(t.render(&[Message::user("x")], true).unwrap(), "<s>x");

    let config = serde_json::json!({"chat_template": [{"name": "tool_use", "template": "TOOLS"}]});
    write(dir.path(), "tokenizer_config.json", &config.to_string());
    let err = ChatTemplate::from_model_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer_config.json") && err.contains("default") && err.contains("tool_use"), "{err}");
}

#[test]
fn model_dir_falls_back_to_jinja_then_json_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tokenizer_config.json", r#"{"eos_token": "<e>"}"#);
    write(dir.path(), "chat_template.json", r#"{"chat_template": "J{{ messages[0].content }}{{ eos_token }}"}"#);
    let from_json = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(from_json.render(&[Message::user("x")], true).unwrap(), "Jx<e>");
    write(dir.path(), "chat_template.jinja", "{% for m in messages %}\n<{{ m.content }}>\n{% endfor %}");
    let from_jinja = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(from_jinja.render(&[Message::user("x")], true).unwrap(), "<x>\n");
    assert!(from_jinja.origin().ends_with("chat_template.jinja"));
}

#[test]
fn missing_and_broken_templates_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = ChatTemplate::from_model_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&dir.path().display().to_string()) && err.contains("no chat template"), "{err}");
    assert!(err.contains("raw"), "{err}");
    assert!(ChatTemplate::find_in_model_dir(dir.path()).unwrap().is_none());

    write(dir.path(), "tokenizer_config.json", "{not json");
    let err = ChatTemplate::from_model_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer_config.json") && err.contains("invalid JSON"), "{err}");

    write(dir.path(), "tokenizer_config.json", r#"{"chat_template": "{% for m in messages %}unclosed"}"#);
    let err = ChatTemplate::from_model_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer_config.json") && err.contains("does not parse"), "{err}");

    write(dir.path(), "tokenizer_config.json", r#"{"chat_template": 7}"#);
    let err = ChatTemplate::from_model_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("must be a string"), "{err}");
}

#[test]
fn raw_mode_needs_no_template_and_chat_mode_does() {
    let raw = PromptFormat::Raw { trailing_newline: false };
    assert_eq!(format_prompt(None, &raw, "Tell me a joke").unwrap(), "Tell me a joke");
    let raw_nl = PromptFormat::Raw { trailing_newline: true };
    assert_eq!(format_prompt(None, &raw_nl, "Tell me a joke").unwrap(), "Tell me a joke\n");
    // Raw mode ignores a template even when one is available.
    assert_eq!(format_prompt(Some(&template(PHI3)), &raw, "q").unwrap(), "q");
    assert!(raw.add_special_tokens() && !chat(None).add_special_tokens());
    let err = format_prompt(None, &chat(None), "q").unwrap_err().to_string();
    assert!(err.contains("no chat template"), "{err}");
}

#[test]
fn chatml_fallback_renders() {
    let t = ChatTemplate::chatml();
    assert_eq!(
        format_prompt(Some(&t), &chat(Some("s")), "u").unwrap(),
        "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n"
    );
}

/// Qwen2.5's own chat template (as shipped in Qwen2.5-Coder-0.5B-Instruct's tokenizer_config.json),
/// rendered as transformers' `apply_chat_template(..., tokenize=False, add_generation_prompt=True)`
/// renders it (expected strings produced by transformers 4.x, not by scalpel): with no system
/// message the template inserts Qwen's default system prompt.
#[test]
fn qwen25_template_renders_like_transformers_with_its_default_system_prompt() {
    let t = template(include_str!("data/qwen2.5-chat-template.jinja"));
    let single = t.render(&[Message::user("How do I bake bread?")], true).unwrap();
    assert_eq!(
        single,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n"
    );
    let conversation = [
        Message::system("Be brief."),
        Message::user("Hi"),
        Message::assistant("Hello!"),
        Message::user("Name a prime."),
    ];
    assert_eq!(
        t.render(&conversation, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a prime.<|im_end|>\n<|im_start|>assistant\n"
    );
    // The chat format with no system prompt leaves the default to the template.
    assert_eq!(format_prompt(Some(&t), &chat(None), "How do I bake bread?").unwrap(), single);
}
