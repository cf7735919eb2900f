//! Collect: from the incumbent version's live log, the **failing set** (the slice's
//! low-scored inferences; a corrected output from feedback becomes the expected output) and the
//! **regression set** (passing inferences from every slice, their output taken as right, or the
//! correction when one was given), deduplicated by input, each split deterministically into
//! the part a proposal may be searched on and the held-out part it is checked on.
//!
//! Privacy: these are the application's inputs. They go only to the prompt's own execution
//! model and to the meta model the agent was configured with (by default the same model; see
//! `[agent] meta`).

use std::collections::{BTreeMap, HashMap, HashSet};

use metaprompt_registry::service::{Feedback, Inference};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::monitor::Slice;

/// One live example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub inference: String,
    pub inputs: BTreeMap<String, Value>,
    /// What the prompt answered.
    pub output: String,
    /// What it should have answered: the correction, or (for passing items) the output.
    pub expected: Option<String>,
    pub score: f64,
    pub tags: BTreeMap<String, String>,
}

impl Item {
    pub fn in_slice(&self, slice: &Slice) -> bool {
        match slice {
            Slice::All => true,
            Slice::Tag { key, value } => self.tags.get(key) == Some(value),
        }
    }
}

/// Where an item goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Demonstrations and instructions are drawn from these.
    Train,
    /// Candidates are raced on these.
    Dev,
    /// Held out: the before/after check per slice.
    Check,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sets {
    /// Failing items of the slice (with or without a correction).
    pub failing: Vec<Item>,
    /// Passing items of every slice.
    pub passing: Vec<Item>,
}

impl Sets {
    /// The failing items that can be scored (they have an expected output).
    pub fn failing_scored(&self) -> impl Iterator<Item = &Item> {
        self.failing.iter().filter(|i| i.expected.is_some())
    }
}

/// An inference's score: the mean of its numeric feedback.
fn score(feedback: &[&Feedback]) -> Option<f64> {
    let s: Vec<f64> = feedback.iter().filter_map(|f| f.score).collect();
    (!s.is_empty()).then(|| s.iter().sum::<f64>() / s.len() as f64)
}

/// The sets for `slice` from the inferences of version `seq` (newest first, as the store
/// reads them) and their feedback. `cap_passing` bounds the regression set (spread over the
/// slices, newest first).
pub fn collect(
    inferences: &[Inference],
    feedback: &[Feedback],
    seq: u32,
    slice: &Slice,
    cap_passing: usize,
) -> Sets {
    let mut by_id: HashMap<&str, Vec<&Feedback>> = HashMap::new();
    for f in feedback {
        by_id.entry(f.inference_id.as_str()).or_default().push(f);
    }
    let mut seen = HashSet::new();
    let mut sets = Sets::default();
    let mut passing: Vec<Item> = Vec::new();
    for i in inferences.iter().filter(|i| i.seq == seq) {
        let Some(output) = i.output.clone() else {
            continue;
        };
        let fb = by_id.get(i.id.as_str()).cloned().unwrap_or_default();
        let Some(score) = score(&fb) else { continue };
        let Value::Object(map) = &i.inputs else {
            continue;
        };
        let inputs: BTreeMap<String, Value> =
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        // Newest first: the first time an input is seen is its latest outcome.
        // A JSON object's text is its identity here (`Value`'s `Display` cannot fail; the
        // keys come sorted from the map).
        if !seen.insert(Value::Object(inputs.clone().into_iter().collect()).to_string()) {
            continue;
        }
        let correction = fb.iter().rev().find_map(|f| f.correction.clone());
        let item = Item {
            inference: i.id.clone(),
            inputs,
            expected: None,
            output,
            score,
            tags: i.tags.clone(),
        };
        if score < 0.5 {
            if item.in_slice(slice) {
                sets.failing.push(Item {
                    expected: correction,
                    ..item
                });
            }
        } else {
            let expected = Some(correction.unwrap_or_else(|| item.output.trim().to_string()));
            passing.push(Item { expected, ..item });
        }
    }
    // The regression set, spread over the slices: round-robin over the items' first tag value.
    let mut groups: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    for p in passing {
        let key = p.tags.values().next().cloned().unwrap_or_default();
        groups.entry(key).or_default().push(p);
    }
    let mut groups: Vec<std::vec::IntoIter<Item>> =
        groups.into_values().map(Vec::into_iter).collect();
    while sets.passing.len() < cap_passing {
        let mut any = false;
        for g in &mut groups {
            if let Some(i) = g.next()
                && sets.passing.len() < cap_passing
            {
                sets.passing.push(i);
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    sets
}

/// An item's part, from a hash of its inference id (stable across passes): 40% checked,
/// 30% train, 30% dev.
pub fn part(item: &Item) -> Part {
    let h = Sha256::digest(item.inference.as_bytes());
    match h[0] % 10 {
        0..=3 => Part::Check,
        4..=6 => Part::Train,
        _ => Part::Dev,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use metaprompt_registry::service::FeedbackSource;
    use serde_json::json;

    use super::*;

    fn inference(id: &str, text: &str, topic: &str, output: &str) -> Inference {
        Inference {
            id: id.into(),
            prompt: "news".into(),
            hash: "h".into(),
            seq: 1,
            label: Some("production".into()),
            model: "m".into(),
            inputs: json!({"text": text}),
            rendered_hash: String::new(),
            output: Some(output.into()),
            error: None,
            tags: BTreeMap::from([("topic".into(), topic.into())]),
            metadata: json!({}),
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: None,
            latency_ms: 0.0,
            caller: "t".into(),
            created_at: Utc::now(),
        }
    }

    fn feedback(id: &str, score: f64, correction: Option<&str>) -> Feedback {
        Feedback {
            inference_id: id.into(),
            score: Some(score),
            label: None,
            correction: correction.map(Into::into),
            comment: None,
            source: FeedbackSource::User,
            caller: "t".into(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn failing_items_take_the_correction_and_duplicates_keep_the_newest() {
        let inferences = vec![
            inference("i4", "stocks fell", "business", "world"),
            inference("i3", "stocks fell", "business", "business"),
            inference("i2", "goal!", "sports", "sports"),
            inference("i1", "rates rose", "business", "world"),
            inference("i0", "unscored", "business", "world"),
        ];
        let feedback = vec![
            feedback("i4", 0.0, Some("business")),
            feedback("i3", 1.0, None),
            feedback("i2", 1.0, None),
            feedback("i1", 0.0, None),
        ];
        let slice = Slice::Tag {
            key: "topic".into(),
            value: "business".into(),
        };
        let sets = collect(&inferences, &feedback, 1, &slice, 10);
        let failing: Vec<(&str, Option<&str>)> = sets
            .failing
            .iter()
            .map(|i| (i.inference.as_str(), i.expected.as_deref()))
            .collect();
        // i3 repeats i4's input and is older: dropped. i0 has no outcome.
        assert_eq!(failing, [("i4", Some("business")), ("i1", None)]);
        assert_eq!(sets.failing_scored().count(), 1);
        let passing: Vec<(&str, Option<&str>)> = sets
            .passing
            .iter()
            .map(|i| (i.inference.as_str(), i.expected.as_deref()))
            .collect();
        assert_eq!(passing, [("i2", Some("sports"))]);
        // Another version's inferences are not the incumbent's evidence.
        assert!(
            collect(&inferences, &feedback, 2, &slice, 10)
                .failing
                .is_empty()
        );
    }

    #[test]
    fn parts_are_stable_and_roughly_forty_thirty_thirty() {
        let mut counts = [0usize; 3];
        for k in 0..3000 {
            let i = Item {
                inference: format!("inf-{k}"),
                inputs: BTreeMap::new(),
                output: String::new(),
                expected: None,
                score: 0.0,
                tags: BTreeMap::new(),
            };
            assert_eq!(part(&i), part(&i.clone()));
            counts[match part(&i) {
                Part::Check => 0,
                Part::Train => 1,
                Part::Dev => 2,
            }] += 1;
        }
        assert!((1050..1350).contains(&counts[0]), "{counts:?}");
        assert!((750..1050).contains(&counts[1]), "{counts:?}");
    }
}
