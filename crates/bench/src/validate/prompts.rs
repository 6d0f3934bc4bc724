//! Generated tasks for the calibration and the detection runs: lists, digits and arithmetic, code,
//! questions, near-ties (answers the model is unsure between, where rounding noise could flip the
//! top token), long stories, and raw completions; greedy or seeded sampling at varied temperatures
//! and nuclei; budgets from 1 to 300 tokens; some with stop strings. Deterministic in the seed.

use serde_json::{json, Value};
use stacknet_protocol::contract::Workload;

use super::CHAT_MODEL;

/// SplitMix64: a small deterministic generator, enough to vary prompts.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const THINGS: &[&str] = &[
    "fruits",
    "animals",
    "countries in Europe",
    "colors",
    "programming languages",
    "planets",
    "musical instruments",
    "famous scientists",
    "vegetables",
    "sports",
];
const COUNTRIES: &[&str] = &[
    "France", "Japan", "Brazil", "Kenya", "Canada", "Norway", "India", "Peru",
];
const CONCEPTS: &[&str] = &[
    "photosynthesis",
    "gravity",
    "a hash function",
    "inflation",
    "the water cycle",
    "recursion",
    "a black hole",
    "democracy",
];
const CODE: &[&str] = &[
    "Write a Python function that reverses a string.",
    "Write a Python function that checks whether a number is prime.",
    "Write a Rust function that sums a slice of integers.",
    "Write a JavaScript function that returns the largest element of an array.",
    "Write a SQL query that counts the rows of a table named users.",
    "Write a C function that computes the factorial of n.",
];
const NEAR_TIES: &[&str] = &[
    "Pick a random number between 1 and 10. Answer with the number only.",
    "Say either heads or tails.",
    "Name one color.",
    "Answer yes or no: is a tomato a fruit?",
    "Choose a letter from A to Z.",
    "Name an animal.",
    "Pick a day of the week.",
    "Give me a random word.",
];
const STORIES: &[&str] = &[
    "a lighthouse keeper",
    "a dragon and a knight",
    "a robot learning to paint",
    "a lost cat",
    "a city under the sea",
    "two friends on a long journey",
];
const COMPLETIONS: &[&str] = &[
    "The quick brown fox",
    "def fibonacci(n):",
    "1, 2, 3, 4, 5,",
    "Once upon a time, in a small village,",
    "The capital of Italy is",
    "SELECT name FROM",
    "3.14159",
    "Dear Sir or Madam,",
];
const STOPS: &[&str] = &["\n", ".", "\n\n", ",", " the", "3", "!"];
const TEMPERATURES: &[f64] = &[0.2, 0.5, 0.7, 0.8, 1.0, 1.2, 1.5];
const TOP_PS: &[f64] = &[1.0, 1.0, 0.95, 0.9, 0.5];

fn user_message(rng: &mut Rng) -> (&'static str, String) {
    match rng.range(0, 6) {
        0 => ("list", format!("List {} {}.", rng.range(3, 15), rng.pick(THINGS))),
        1 => {
            let a = rng.range(0, 500);
            let prompt = match rng.range(0, 3) {
                0 => format!("Count from {a} to {}, separated by commas.", a + rng.range(5, 60)),
                1 => format!("What is {a} times {}?", rng.range(2, 99)),
                2 => format!("Write the first {} digits of pi.", rng.range(5, 40)),
                _ => format!("Write the numbers from {a} to {} in words.", a + rng.range(3, 12)),
            };
            ("digits", prompt)
        }
        2 => ("code", rng.pick(CODE).to_string()),
        3 => {
            let prompt = if rng.chance(50) {
                format!("What is the capital of {}?", rng.pick(COUNTRIES))
            } else {
                format!("Explain {} in one paragraph.", rng.pick(CONCEPTS))
            };
            ("question", prompt)
        }
        4 => ("near-tie", rng.pick(NEAR_TIES).to_string()),
        _ => (
            "story",
            format!("Write a long story about {}.", rng.pick(STORIES)),
        ),
    }
}

/// Token budgets: a tenth of one token, then short, medium, long and a tenth of hundreds.
fn budget(rng: &mut Rng) -> u64 {
    match rng.range(0, 9) {
        0 => 1,
        1 | 2 => rng.range(2, 16),
        3..=6 => rng.range(16, 64),
        7 | 8 => rng.range(64, 160),
        _ => rng.range(160, 300),
    }
}

/// One task: the request, its workload, and what kind of prompt it is.
pub struct Task {
    pub request: Value,
    pub workload: Workload,
    pub kind: &'static str,
    pub sampled: bool,
}

/// Task number `i` of the run seeded `seed`. `greedy`: force temperature 0 (`None`: half and half);
/// `tokens`: force the budget into this range.
pub fn task(seed: u64, i: u64, greedy: Option<bool>, tokens: Option<(u64, u64)>) -> Task {
    let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(i));
    let completion = rng.chance(15);
    let (kind, mut request, workload) = if completion {
        let prompt = rng.pick(COMPLETIONS);
        (
            "completion",
            json!({"model": CHAT_MODEL, "prompt": prompt}),
            Workload::Completion,
        )
    } else {
        let (kind, content) = user_message(&mut rng);
        (
            kind,
            json!({"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}]}),
            Workload::Chat,
        )
    };
    let max_tokens = match tokens {
        Some((lo, hi)) => rng.range(lo, hi),
        None => budget(&mut rng),
    };
    request["max_tokens"] = json!(max_tokens);
    let sampled = greedy.map_or_else(|| rng.chance(50), |g| !g);
    if sampled {
        request["temperature"] = json!(rng.pick(TEMPERATURES));
        request["top_p"] = json!(rng.pick(TOP_PS));
        request["seed"] = json!(rng.range(0, u64::from(u32::MAX)));
    } else {
        request["temperature"] = json!(0);
    }
    if rng.chance(20) {
        request["stop"] = json!([rng.pick(STOPS)]);
    }
    Task {
        request,
        workload,
        kind,
        sampled,
    }
}
