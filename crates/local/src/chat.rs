//! Chat prompts as the model was trained to see them: the model's own chat template (the GGUF
//! metadata key `tokenizer.chat_template`, a Jinja template), rendered with minijinja the way
//! the model's authors' tooling renders it — `trim_blocks` and `lstrip_blocks` on, loop
//! controls, Python string methods, `raise_exception`, `bos_token` / `eos_token`, and
//! `add_generation_prompt` so the text ends where the assistant's turn begins.
//!
//! llama.cpp's own `llama_chat_apply_template` recognises the common template families and
//! writes their markers, but not what a template adds by itself: SmolLM2's, for one, starts
//! every conversation without a system message with its default one ("You are a helpful AI
//! assistant named SmolLM…"), which llama.cpp leaves out. So the model's template comes first;
//! llama.cpp's rendering is the fallback for a template minijinja cannot render, and a plain
//! transcript for a model without one.

use metaprompt_llm::Message;
use minijinja::{Environment, Error, ErrorKind, Value, context};

use crate::error::LocalError;

/// A model's chat template, compiled once.
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compile `source`; `bos` and `eos` are the model's special tokens as text.
    pub(crate) fn new(source: &str, bos: String, eos: String) -> Result<Self, LocalError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| LocalError::TemplateCompile(e.to_string()))?;
        Ok(Self { env, bos, eos })
    }

    /// The conversation as the model sees it, ending where its answer starts.
    pub(crate) fn render(&self, messages: &[Message]) -> Result<String, LocalError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
            .collect();
        self.env
            .get_template(NAME)
            .and_then(|t| {
                t.render(context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => self.bos.as_str(),
                    eos_token => self.eos.as_str(),
                })
            })
            .map_err(|e| LocalError::TemplateRender(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// SmolLM2-135M-Instruct's template, as its GGUF file carries it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn a_template_renders_with_its_default_system_message_and_the_generation_prompt() {
        let t = ChatTemplate::new(SMOLLM2, "<|im_start|>".into(), "<|im_end|>".into()).unwrap();
        assert_eq!(
            t.render(&[Message::user("Hi")]).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[Message::system("Be brief."), Message::user("Hi")])
                .unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_and_raise_exception_work_as_in_the_models_tooling() {
        let source = "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('Conversations start with the user') }}{% endif %}{{ bos_token }}{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'].strip() }}\n{% endfor %}";
        let t = ChatTemplate::new(source, "<s>".into(), "</s>".into()).unwrap();
        assert_eq!(
            t.render(&[Message::user("  Hi  ")]).unwrap(),
            "<s>[USER] Hi\n"
        );
        let e = t
            .render(&[Message::assistant("Hi")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("Conversations start with the user"), "{e}");
        let e = ChatTemplate::new("{% for %}", String::new(), String::new())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not compile"), "{e}");
    }
}
