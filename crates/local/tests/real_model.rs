//! The real embedded models (Gemma 3 270M, SmolLM2 and Qwen2.5-Coder 0.5B, fetched on first
//! use): label scoring, generation, multi-token labels, reproducibility whatever else is in the
//! batch, chat templates and embeddings.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use metaprompt_llm::{Config, Hub, Message, Prompt, Provider, ProviderKind, Request, ScoreRequest};
use metaprompt_local::{LocalModels, LocalProvider, Strategy};

/// One model for the whole test binary (loading is the slow part).
fn model() -> &'static LocalProvider {
    static MODEL: OnceLock<LocalProvider> = OnceLock::new();
    MODEL.get_or_init(|| {
        let config = Config::default();
        let models = Arc::new(LocalModels::from_config(&config));
        let info = config.resolve("local:gemma-3-270m", &|_| None).unwrap();
        models.provider(&info).unwrap()
    })
}

const FOUR_SHOT: &str = "Review: a gorgeous, witty, seductive movie.\nSentiment: positive\n\n\
Review: the plot is nothing but boilerplate cliches.\nSentiment: negative\n\n\
Review: an utterly charming and hilarious film that reminded me why I love movies.\nSentiment: positive\n\n\
Review: it's so laddish and juvenile, only teenage boys could possibly find it funny.\nSentiment: negative\n\n";

fn sentiment(review: &str) -> ScoreRequest {
    ScoreRequest {
        prompt: Prompt::Text(format!("{FOUR_SHOT}Review: {review}\nSentiment:")),
        labels: vec![" positive".into(), " negative".into()],
    }
}

const CLEAR: &[(&str, usize)] = &[
    ("a masterpiece: moving, funny and beautifully acted.", 0),
    ("one of the best films of the year, a pure delight.", 0),
    ("wonderful, warm and funny.", 0),
    ("terrible. the worst movie i have ever seen.", 1),
    ("awful acting, a stupid plot and no laughs at all.", 1),
    ("a complete waste of time and money.", 1),
];

const MORE: &[&str] = &[
    "unflinchingly bleak and desperate",
    "it's a charming and often affecting journey.",
    "the story is also as unoriginal as they come, already having been recycled more times than i'd care to count.",
    "a thoughtful, provocative, insistently humanizing film.",
    "an absurdist comedy about alienation, separation and loss.",
    "the acting, costumes, music, cinematography and sound are all astounding given the production's austere locales.",
];

#[tokio::test]
async fn embedded_four_shot_sentiment_through_label_scoring() {
    let facts = model().facts().await.unwrap();
    assert!(
        facts.path.ends_with("gemma-3-270m-q4_k_m.gguf"),
        "{facts:?}"
    );
    let requests: Vec<ScoreRequest> = CLEAR.iter().map(|(r, _)| sentiment(r)).collect();
    let scores = model().score(&requests).await;
    for ((review, expected), score) in CLEAR.iter().zip(scores) {
        let score = score.unwrap();
        assert_eq!(score.best(), *expected, "{review}: {:?}", score.probs);
        assert!((score.probs.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(
            score.label_tokens,
            vec![1, 1],
            "` positive` and ` negative` are one token each"
        );
        assert!(score.usage.input_tokens > 50);
    }
}

#[tokio::test]
async fn embedded_scores_do_not_depend_on_batch_neighbours_or_order() {
    let requests: Vec<ScoreRequest> = CLEAR
        .iter()
        .map(|(r, _)| r)
        .chain(MORE)
        .map(|r| sentiment(r))
        .collect();
    // Reference: every request decoded alone, from scratch.
    let alone: Vec<Vec<f64>> = model()
        .score_with(&requests, Strategy::OneByOne)
        .await
        .into_iter()
        .map(|s| s.unwrap().logprobs)
        .collect();
    // The same requests in the shared-prefix path: all together, reversed, in small groups with
    // different neighbours, and mixed with an unrelated prompt.
    let all = model().score(&requests).await;
    let mut reversed: Vec<ScoreRequest> = requests.clone();
    reversed.reverse();
    let rev = model().score(&reversed).await;
    for (i, s) in all.into_iter().enumerate() {
        assert_eq!(
            s.unwrap().logprobs,
            alone[i],
            "request {i} in the full batch"
        );
    }
    for (i, s) in rev.into_iter().enumerate() {
        assert_eq!(
            s.unwrap().logprobs,
            alone[requests.len() - 1 - i],
            "request {i} reversed"
        );
    }
    let odd = ScoreRequest {
        prompt: Prompt::Text("The capital of France is".into()),
        labels: vec![" Paris".into(), " Rome".into()],
    };
    for (a, b) in [(0, 5), (3, 9), (7, 1)] {
        let pair = vec![requests[a].clone(), odd.clone(), requests[b].clone()];
        let s = model().score(&pair).await;
        assert_eq!(
            s[0].as_ref().unwrap().logprobs,
            alone[a],
            "request {a} next to {b}"
        );
        assert_eq!(
            s[2].as_ref().unwrap().logprobs,
            alone[b],
            "request {b} next to {a}"
        );
        assert_eq!(s[1].as_ref().unwrap().best(), 0, "Paris");
    }
    // Reuse really happened in the batched runs.
    let again = model().score(&requests[..3]).await;
    assert!(
        again
            .iter()
            .skip(1)
            .all(|s| s.as_ref().unwrap().usage.cached_input_tokens.unwrap() > 40)
    );
}

#[tokio::test]
async fn embedded_multi_token_labels_add_up() {
    let prompt = format!("{FOUR_SHOT}Review: a dull, tedious mess.\nSentiment:");
    let whole = ScoreRequest {
        prompt: Prompt::Text(prompt.clone()),
        labels: vec![" negative review".into(), " positive".into()],
    };
    let s = model()
        .score(std::slice::from_ref(&whole))
        .await
        .pop()
        .unwrap()
        .unwrap();
    assert!(s.label_tokens[0] >= 2, "{:?}", s.label_tokens);
    let first = model()
        .score(&[ScoreRequest {
            prompt: Prompt::Text(prompt.clone()),
            labels: vec![" negative".into()],
        }])
        .await
        .pop()
        .unwrap()
        .unwrap();
    let rest = model()
        .score(&[ScoreRequest {
            prompt: Prompt::Text(format!("{prompt} negative")),
            labels: vec![" review".into()],
        }])
        .await
        .pop()
        .unwrap()
        .unwrap();
    let chained = first.logprobs[0] + rest.logprobs[0];
    // Equal up to the batch-layout noise of a different decode path.
    assert!(
        (s.logprobs[0] - chained).abs() < 0.3,
        "{} vs {chained}",
        s.logprobs[0]
    );
    assert!(
        s.logprobs[0] < first.logprobs[0],
        "a longer continuation is less likely"
    );
}

#[tokio::test]
async fn embedded_generation_is_greedy_reproducible_and_honours_stop_and_length() {
    let request = Request::text("The capital of France is").max_tokens(12);
    let a = model().complete(&request).await.unwrap();
    assert!(!a.text.trim().is_empty());
    assert!(a.usage.output_tokens <= 12);
    let b = model()
        .complete_batch(&[
            Request::text("Unrelated words here").max_tokens(5),
            request.clone(),
        ])
        .await;
    assert_eq!(
        b[1].as_ref().unwrap().text,
        a.text,
        "same answer whatever the neighbours"
    );
    let stop_at = a.text.split_whitespace().nth(2).unwrap().to_string();
    let stopped = model()
        .complete(&request.clone().stop(stop_at.clone()))
        .await
        .unwrap();
    assert!(
        !stopped.text.contains(&stop_at) && a.text.starts_with(&stopped.text),
        "{:?} / {:?}",
        stopped.text,
        a.text
    );
    assert_eq!(stopped.finish_reason, metaprompt_llm::FinishReason::Stop);
    let short = model()
        .complete(&Request::text("Once upon a time").max_tokens(3))
        .await
        .unwrap();
    assert_eq!(short.usage.output_tokens, 3);
    assert_eq!(short.finish_reason, metaprompt_llm::FinishReason::Length);
    // Sampling: reproducible per sample index, different across indices.
    let hot = Request::text("My favourite animal is the")
        .max_tokens(8)
        .temperature(1.0)
        .seed(42);
    let s0 = model().complete(&hot).await.unwrap().text;
    assert_eq!(model().complete(&hot).await.unwrap().text, s0);
    let others: Vec<String> = futures_like(&hot).await;
    assert!(
        others.iter().any(|t| *t != s0),
        "samples 1..4 all equal sample 0: {s0:?}"
    );
}

/// Gemma with `[local] lanes = 4`: a batch's completions generated four at a time.
fn gemma_in_lanes() -> &'static LocalProvider {
    static MODEL: OnceLock<LocalProvider> = OnceLock::new();
    MODEL.get_or_init(|| {
        let config = Config::default();
        let mut options = metaprompt_local::LocalOptions::from_config(&config);
        options.lanes = 4;
        let models = Arc::new(LocalModels::new(options));
        let info = config.resolve("local:gemma-3-270m", &|_| None).unwrap();
        models.provider(&info).unwrap()
    })
}

/// Completions generated in lanes (up to four requests per decode call) have a fixed layout
/// per batch: the same requests give the same texts in any order, requests that join as others
/// finish and prefixes taken from another lane included; a lone request is the one-at-a-time
/// text; every request keeps its own length, stop and sampling.
#[tokio::test]
async fn embedded_generation_in_lanes_is_fixed_per_batch_and_alone_is_one_at_a_time() {
    let m = gemma_in_lanes();
    let shots = |topic: &str| -> String {
        (1..=6)
            .map(|i| format!("Q: Name fact number {i} about {topic}.\nA: Fact {i} about {topic} is well known and often repeated.\n\n"))
            .collect()
    };
    let (a, b) = (shots("the sea"), shots("mountains"));
    let mut requests: Vec<Request> = [
        ("What lives in it?", 24),
        ("How deep is it?", 6),
        ("What colour is it?", 16),
        ("Who sails on it?", 30),
    ]
    .iter()
    .map(|(q, n)| Request::text(format!("{a}Q: {q}\nA:")).max_tokens(*n))
    .chain(
        [
            "How high are they?",
            "Who climbs them?",
            "What grows there?",
        ]
        .iter()
        .map(|q| Request::text(format!("{b}Q: {q}\nA:")).max_tokens(20)),
    )
    .collect();
    requests[2] = requests[2].clone().stop("\n");
    requests[5] = requests[5].clone().temperature(0.8).seed(7);
    let texts = |rs: Vec<Result<metaprompt_llm::Response, metaprompt_llm::LlmError>>| {
        rs.into_iter().map(Result::unwrap).collect::<Vec<_>>()
    };
    let before = m.lanes_stats().await.unwrap();
    let lanes = texts(m.complete_with(&requests, Strategy::Lanes).await);
    let mut reversed = requests.clone();
    reversed.reverse();
    let mut backwards = texts(m.complete_with(&reversed, Strategy::Lanes).await);
    backwards.reverse();
    for (i, (x, y)) in lanes.iter().zip(&backwards).enumerate() {
        assert_eq!(x.text, y.text, "request {i}");
        assert_eq!(x.finish_reason, y.finish_reason, "request {i}");
        assert_eq!(x.usage.output_tokens, y.usage.output_tokens, "request {i}");
    }
    assert_eq!(lanes[1].usage.output_tokens, 6);
    assert_eq!(lanes[1].finish_reason, metaprompt_llm::FinishReason::Length);
    assert!(!lanes[2].text.contains('\n'), "{:?}", lanes[2].text);
    let after = m.lanes_stats().await.unwrap();
    assert_eq!(after.batches, before.batches + 2, "{after:?}");
    assert!(
        after.copies > before.copies,
        "a prefix came from another lane: {after:?}"
    );
    assert_eq!(
        after.max_lanes, 4,
        "four requests shared a decode call: {after:?}"
    );
    // Batched, a text departs from the one-at-a-time text only at a near tie (rare on these
    // short answers; all seven agreed when measured): a lane decoding from wrong cells would
    // disagree on most.
    let one = texts(m.complete_with(&requests, Strategy::SharedPrefix).await);
    let agree = one
        .iter()
        .zip(&lanes)
        .filter(|(x, y)| x.text == y.text)
        .count();
    assert!(agree >= 5, "{agree} of 7 agree: {one:?} / {lanes:?}");
    // Alone in lanes, a request is decoded as one request at a time decodes it.
    for r in [&requests[0], &requests[5]] {
        let alone = texts(
            m.complete_with(std::slice::from_ref(r), Strategy::Lanes)
                .await,
        );
        let one = texts(
            m.complete_with(std::slice::from_ref(r), Strategy::SharedPrefix)
                .await,
        );
        assert_eq!(alone[0].text, one[0].text);
    }
}

async fn futures_like(hot: &Request) -> Vec<String> {
    let requests: Vec<Request> = (1..5).map(|i| hot.clone().sample(i)).collect();
    model()
        .complete_batch(&requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().text)
        .collect()
}

/// Gemma 3 270M (the base model) carries no chat template, so chat messages reach it as a plain
/// transcript, written out exactly, and a chat request is answered on that text: the same
/// answer as the transcript sent as a text prompt. The models with a template render the
/// template's own text (SmolLM2 and Qwen below).
#[tokio::test]
async fn embedded_chat_messages_without_a_template_are_a_plain_transcript() {
    let m = model();
    let facts = m.facts().await.unwrap();
    assert!(!facts.has_chat_template && facts.chat_template.is_none());
    let alone = m
        .render(&Prompt::Chat(vec![Message::user("Say hello.")]))
        .await
        .unwrap();
    assert_eq!(alone, "User: Say hello.\n\nAssistant:");
    let with_system = m
        .render(&Prompt::Chat(vec![
            Message::system("Be brief."),
            Message::user("Say hello."),
        ]))
        .await
        .unwrap();
    assert_eq!(with_system, "Be brief.\n\nUser: Say hello.\n\nAssistant:");
    let chat = m
        .complete(&Request::chat(vec![Message::user("Say hello.")]).max_tokens(8))
        .await
        .unwrap();
    let text = m
        .complete(&Request::text(alone).max_tokens(8))
        .await
        .unwrap();
    assert_eq!(chat.text, text.text, "the chat request is its transcript");
    assert_eq!(chat.usage.input_tokens, text.usage.input_tokens);
}

#[tokio::test]
async fn embedded_too_long_prompts_and_empty_labels_are_clear_errors() {
    let long = Request::text("word ".repeat(5000)).max_tokens(4);
    let e = model().complete(&long).await.unwrap_err().to_string();
    assert!(e.contains("needs") && e.contains("context_size"), "{e}");
    let e = model()
        .score(&[ScoreRequest {
            prompt: Prompt::Text("x".into()),
            labels: vec![],
        }])
        .await;
    assert!(
        e[0].as_ref()
            .unwrap_err()
            .to_string()
            .contains("at least one label")
    );
}

#[tokio::test]
async fn embedded_the_hub_serves_local_specs_through_the_factory() {
    let config = Config::default();
    let models = Arc::new(LocalModels::from_config(&config));
    let hub = Hub::new(config).with_factory(ProviderKind::Local, models.factory());
    let m = hub.model("local:gemma-3-270m").unwrap();
    assert!(m.can_score());
    assert_eq!(m.info().name, "local:gemma-3-270m");
    let e = hub.model("local:no-such-model").unwrap_err().to_string();
    assert!(e.contains("unknown model `no-such-model`"), "{e}");
}

/// Live tests one at a time: "alone" must mean alone (canonical tests never touch the live
/// context, so they run beside these).
static LIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A live completion and the pieces of text it streamed.
async fn live(request: &Request) -> (Result<metaprompt_llm::Response, String>, Vec<String>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let result = model()
        .complete_live(request, &tx)
        .await
        .map_err(|e| e.to_string());
    drop(tx);
    let mut pieces = Vec::new();
    while let Some(p) = rx.recv().await {
        pieces.push(p);
    }
    (result, pieces)
}

#[tokio::test]
async fn embedded_live_requests_share_decode_steps_and_stream_their_tokens() {
    let _alone = LIVE.lock().await;
    let requests: Vec<Request> = MORE
        .iter()
        .copied()
        .chain(CLEAR.iter().map(|(r, _)| *r))
        .take(8)
        .map(|r| Request::text(format!("{FOUR_SHOT}Review: {r}\nSentiment:")).max_tokens(8))
        .collect();
    let canonical: Vec<String> = model()
        .complete_batch(&requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().text)
        .collect();
    let before = model().live_stats().await.unwrap();
    let mut agree = 0;
    for round in 0..2 {
        let answers = futures::future::join_all(requests.iter().map(live)).await;
        for ((result, pieces), canonical) in answers.into_iter().zip(&canonical) {
            let r = result.unwrap();
            assert_eq!(pieces.concat(), r.text, "the pieces make the text");
            assert!((1..=8).contains(&r.usage.output_tokens), "{:?}", r.usage);
            assert!(r.usage.output_tokens == 1 || pieces.len() > 1, "{pieces:?}");
            let label = |t: &str| t.lines().next().unwrap_or_default().to_string();
            assert!(
                [" positive", " negative"].contains(&label(&r.text).as_str()),
                "a broken position or sequence would not answer with a label: {:?}",
                r.text
            );
            agree += usize::from(round == 0 && label(&r.text) == label(canonical));
        }
    }
    let after = model().live_stats().await.unwrap();
    assert_eq!(after.requests - before.requests, 16, "{after:?}");
    assert!(
        after.max_sequences >= 4,
        "concurrent requests share decode steps: {after:?}"
    );
    assert!(
        after.reused_tokens > before.reused_tokens,
        "the second round reuses the slots' prompt prefix: {after:?}"
    );
    // Batched rows differ from the canonical ones in the last bits: the labels agree (later
    // words, after "Review:", are near-ties and may not).
    assert!(
        agree >= 7,
        "{agree} of 8 live labels equal the canonical ones"
    );
}

#[tokio::test]
async fn embedded_live_alone_is_reproducible_and_honours_stop_length_and_limits() {
    let _alone = LIVE.lock().await;
    let request = Request::text("The capital of France is").max_tokens(12);
    let (a, _) = live(&request).await;
    let a = a.unwrap();
    let (b, _) = live(&request).await;
    assert_eq!(b.unwrap().text, a.text, "alone, whatever the slot held");
    let stop_at = a.text.split_whitespace().nth(2).unwrap().to_string();
    let (stopped, pieces) = live(&request.clone().stop(stop_at.clone())).await;
    let stopped = stopped.unwrap();
    assert!(
        !pieces.concat().contains(&stop_at) && a.text.starts_with(&stopped.text),
        "{pieces:?} / {:?}",
        a.text
    );
    assert_eq!(stopped.finish_reason, metaprompt_llm::FinishReason::Stop);
    let (short, _) = live(&Request::text("Once upon a time").max_tokens(3)).await;
    let short = short.unwrap();
    assert_eq!(short.usage.output_tokens, 3);
    assert_eq!(short.finish_reason, metaprompt_llm::FinishReason::Length);
    let (long, _) = live(&Request::text("word ".repeat(5000)).max_tokens(4)).await;
    let e = long.unwrap_err();
    assert!(e.contains("needs") && e.contains("context_size"), "{e}");
}

#[tokio::test]
async fn embedded_live_caller_that_goes_away_frees_its_slot() {
    let _alone = LIVE.lock().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let call = tokio::spawn(async move {
        let request = Request::text("Once upon a time").max_tokens(400);
        model().complete_live(&request, &tx).await
    });
    assert!(rx.recv().await.is_some(), "a first piece");
    drop(rx);
    let e = call.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("went away"), "{e}");
    let (next, _) = live(&Request::text("Hello").max_tokens(2)).await;
    assert!(next.is_ok(), "{next:?}");
}

/// The instruction-tuned embedded model, SmolLM2-135M-Instruct (fetched on first use).
fn smollm2() -> &'static LocalProvider {
    static MODEL: OnceLock<LocalProvider> = OnceLock::new();
    MODEL.get_or_init(|| {
        let config = Config::default();
        let models = Arc::new(LocalModels::from_config(&config));
        let info = config
            .resolve("local:smollm2-135m-instruct", &|_| None)
            .unwrap();
        assert_eq!(info.format, metaprompt_llm::PromptFormat::Chat);
        models.provider(&info).unwrap()
    })
}

#[tokio::test]
async fn embedded_smollm2_chat_prompts_follow_the_models_own_template() {
    let m = smollm2();
    let facts = m.facts().await.unwrap();
    assert!(
        facts.path.ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"),
        "{:?}",
        facts.path
    );
    // The template in the file is the one SmolLM2 was tuned with: a default system message
    // when the conversation has none, ChatML markers, the assistant's turn opened.
    let template = facts.chat_template.unwrap();
    assert!(
        template.contains("You are a helpful AI assistant named SmolLM"),
        "{template}"
    );
    let alone = m
        .render(&Prompt::Chat(vec![Message::user(
            "What is the capital of France?",
        )]))
        .await
        .unwrap();
    assert_eq!(
        alone,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system = m
        .render(&Prompt::Chat(vec![
            Message::system("Answer in one word."),
            Message::user("What is the capital of France?"),
        ]))
        .await
        .unwrap();
    assert_eq!(
        with_system,
        "<|im_start|>system\nAnswer in one word.<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    // Decoded through that text, the instruct model follows the instruction.
    for (review, label, other) in [
        (
            "a gorgeous, witty, seductive movie.",
            "positive",
            "negative",
        ),
        // It says "not positive. It's a negative review".
        (
            "the worst film I have ever seen, dull and stupid.",
            "negative",
            "is positive",
        ),
    ] {
        let ask = format!("Is this movie review positive or negative? Review: {review}");
        let r = m
            .complete(&Request::chat(vec![Message::user(ask)]).max_tokens(16))
            .await
            .unwrap();
        let text = r.text.to_lowercase();
        assert!(
            text.contains(label) && !text.contains(other),
            "{:?}",
            r.text
        );
    }
    // Text prompts are decoded as they are.
    assert_eq!(
        m.render(&Prompt::Text("Review: fine.\nSentiment:".into()))
            .await
            .unwrap(),
        "Review: fine.\nSentiment:"
    );
}

#[tokio::test]
async fn embedded_embeddings_are_unit_vectors_that_put_like_texts_nearer() {
    let texts: Vec<String> = [
        "What is the capital city of France?",
        "Which city is the capital of Germany?",
        "The striker scored twice in the second half of the match.",
        "The midfielder was sent off before half time.",
    ]
    .map(String::from)
    .to_vec();
    let v = model().embed(&texts).await.unwrap();
    assert_eq!(v.len(), 4);
    let dims = v[0].len();
    assert!(dims >= 256, "a hidden state, not a stub: {dims} dimensions");
    for x in &v {
        assert_eq!(x.len(), dims);
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length: {norm}");
    }
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let questions = cos(&v[0], &v[1]);
    let across = cos(&v[0], &v[2]);
    let matches = cos(&v[2], &v[3]);
    assert!(
        matches > across,
        "two match reports ({matches:.3}) are nearer than a match report and a question ({across:.3})"
    );
    assert!(
        questions > across,
        "two capital questions ({questions:.3}) are nearer than a question and a match report ({across:.3})"
    );
}

/// Qwen2.5-Coder-0.5B-Instruct (fetched on first use: six wheels, 491 MB).
fn qwen() -> &'static LocalProvider {
    static MODEL: OnceLock<LocalProvider> = OnceLock::new();
    MODEL.get_or_init(|| {
        let config = Config::default();
        let models = Arc::new(LocalModels::from_config(&config));
        let info = config
            .resolve("local:qwen2.5-coder-0.5b-instruct", &|_| None)
            .unwrap();
        assert_eq!(info.format, metaprompt_llm::PromptFormat::Chat);
        models.provider(&info).unwrap()
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Everything that works on Gemma works on Qwen: its own chat template (the text rendered is
/// the template in the file, with Qwen's default system message), label scoring over chat
/// prompts, embeddings, and an instruction followed.
#[tokio::test]
async fn embedded_qwen_renders_its_own_template_scores_labels_embeds_and_follows_instructions() {
    let m = qwen();
    let facts = m.facts().await.unwrap();
    assert!(
        facts
            .path
            .ends_with("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
        "{:?}",
        facts.path
    );
    let system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
    let template = facts.chat_template.unwrap();
    assert!(template.contains(system), "{template}");
    let alone = m
        .render(&Prompt::Chat(vec![Message::user("Hi")]))
        .await
        .unwrap();
    assert_eq!(
        alone,
        format!(
            "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\n"
        )
    );
    // Label scoring over a chat prompt: the labels continue the assistant's turn.
    let ask = |review: &str| ScoreRequest {
        prompt: Prompt::Chat(vec![
            Message::system("Classify the movie review. Reply with positive or negative."),
            Message::user(review.to_string()),
        ]),
        labels: vec!["positive".into(), "negative".into()],
    };
    let scores = m
        .score(&[
            ask("a masterpiece: moving, funny and beautifully acted."),
            ask("terrible. the worst movie i have ever seen."),
        ])
        .await;
    let best: Vec<usize> = scores.iter().map(|s| s.as_ref().unwrap().best()).collect();
    assert_eq!(best, [0, 1]);
    // Embeddings: a paraphrase is nearer than an unrelated text.
    let v = m
        .embed(&[
            "The invoice I received is wrong.".into(),
            "My bill has an error in it.".into(),
            "The mountain was covered in snow.".into(),
        ])
        .await
        .unwrap();
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]), "{v:?}");
    // An instruction followed, to the letter.
    let r = m
        .complete(
            &Request::chat(vec![
                Message::system("Reply with the output only, nothing else."),
                Message::user("Write the opposite of the word: hot"),
            ])
            .max_tokens(8),
        )
        .await
        .unwrap();
    assert_eq!(
        r.text.trim().to_lowercase().trim_end_matches('.'),
        "cold",
        "{:?}",
        r.text
    );
}
