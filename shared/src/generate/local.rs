//! The offline provider: deterministic text for a given prompt and settings, word by word.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use super::{EventStream, Generation, Prompt, Provider, ProviderError, StreamEvent};
use crate::api::Usage;
use crate::config::LocalProviderConfig;

const WORDS: &[&str] = &[
    "canary",
    "migration",
    "traffic",
    "backend",
    "gateway",
    "request",
    "latency",
    "steady",
    "bright",
    "quiet",
    "signal",
    "shift",
    "gentle",
    "careful",
    "morning",
    "yellow",
    "song",
    "window",
    "river",
    "stone",
    "light",
    "measure",
    "compare",
    "weight",
    "sticky",
    "cookie",
    "health",
    "proxy",
    "route",
    "stream",
    "token",
    "answer",
    "sings",
    "moves",
    "holds",
    "watches",
    "returns",
    "waits",
    "flows",
    "rests",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "with",
];

pub struct LocalProvider {
    model: String,
    token_delay: Duration,
}

impl LocalProvider {
    pub fn new(config: &LocalProviderConfig) -> Self {
        Self {
            model: config.model.clone(),
            token_delay: config.token_delay_ms.get(),
        }
    }

    fn model(&self, prompt: &Prompt) -> String {
        prompt.model.clone().unwrap_or_else(|| self.model.clone())
    }
}

/// FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// SplitMix64: a tiny, well-known generator, seeded from the request.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The words of the answer (each after the first carries its leading space), the stop reason
/// and the usage. A natural length is drawn from the seed; `max_tokens` cuts it short.
pub fn compose(prompt: &Prompt, model: &str) -> (Vec<String>, &'static str, Usage) {
    let mut state = fnv1a(&[
        prompt.text.as_bytes(),
        &prompt.temperature.to_bits().to_le_bytes(),
        model.as_bytes(),
    ]);
    let natural = 12 + (next(&mut state) % 48) as u32;
    let count = natural.min(prompt.max_tokens);
    let mut words = Vec::with_capacity(count as usize);
    let mut sentence_left = 0;
    for i in 0..count {
        let mut word = WORDS[(next(&mut state) % WORDS.len() as u64) as usize].to_owned();
        if sentence_left == 0 {
            sentence_left = 5 + next(&mut state) % 8;
            word[..1].make_ascii_uppercase();
        }
        sentence_left -= 1;
        if sentence_left == 0 || i + 1 == count {
            word.push('.');
        }
        words.push(if i == 0 { word } else { format!(" {word}") });
    }
    let stop_reason = if count < natural {
        "max_tokens"
    } else {
        "end_turn"
    };
    let usage = Usage {
        input_tokens: prompt.text.split_whitespace().count().max(1) as u32,
        output_tokens: count,
    };
    (words, stop_reason, usage)
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn generate(&self, prompt: Prompt) -> Result<Generation, ProviderError> {
        let model = self.model(&prompt);
        let (words, stop_reason, usage) = compose(&prompt, &model);
        if !self.token_delay.is_zero() {
            tokio::time::sleep(self.token_delay * usage.output_tokens).await;
        }
        Ok(Generation {
            model,
            content: words.concat(),
            stop_reason: stop_reason.to_owned(),
            usage,
        })
    }

    async fn stream(&self, prompt: Prompt) -> Result<EventStream, ProviderError> {
        let model = self.model(&prompt);
        let (words, stop_reason, usage) = compose(&prompt, &model);
        let delay = self.token_delay;
        let deltas = futures::stream::iter(words).then(move |word| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(StreamEvent::Delta(word))
        });
        let done = futures::stream::once(async move {
            Ok(StreamEvent::Done {
                model,
                stop_reason: stop_reason.to_owned(),
                usage,
            })
        });
        Ok(deltas.chain(done).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(text: &str, max_tokens: u32) -> Prompt {
        Prompt {
            text: text.into(),
            max_tokens,
            temperature: 0.7,
            model: None,
        }
    }

    #[test]
    fn the_same_prompt_gives_the_same_answer_and_another_prompt_another() {
        let a = compose(&prompt("write a haiku", 4096), "m");
        let b = compose(&prompt("write a haiku", 4096), "m");
        let c = compose(&prompt("write a sonnet", 4096), "m");
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
        assert_eq!(a.1, "end_turn");
        assert_eq!(a.2.input_tokens, 3);
    }

    #[test]
    fn max_tokens_cuts_the_answer_short() {
        let (words, stop_reason, usage) = compose(&prompt("write a haiku", 3), "m");
        assert_eq!(words.len(), 3);
        assert_eq!(stop_reason, "max_tokens");
        assert_eq!(usage.output_tokens, 3);
    }

    #[tokio::test]
    async fn the_stream_spells_out_the_same_answer_word_by_word() {
        let provider = LocalProvider::new(&LocalProviderConfig::default());
        let whole = provider.generate(prompt("hello", 20)).await.unwrap();
        let events: Vec<_> = provider
            .stream(prompt("hello", 20))
            .await
            .unwrap()
            .collect()
            .await;
        let mut text = String::new();
        for event in &events[..events.len() - 1] {
            match event {
                Ok(StreamEvent::Delta(word)) => text.push_str(word),
                other => panic!("expected a delta, got {other:?}"),
            }
        }
        assert_eq!(text, whole.content);
        assert_eq!(events.len() as u32, whole.usage.output_tokens + 1);
        assert!(matches!(events.last(), Some(Ok(StreamEvent::Done { .. }))));
    }
}
