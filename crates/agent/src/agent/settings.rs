//! The `[agent]` policy, checked: what the agent may do, per prompt, and its daily allowance.

use std::collections::BTreeMap;

use chrono::Duration;
use metaprompt_llm::Config;

use crate::config::{AgentConfig, AgentPromptConfig};

use crate::monitor::Policy;

use super::AgentError;

/// The `[agent]` policy, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: Policy,
    pub meta: Option<String>,
    pub max_calls_per_day: u64,
    pub max_usd_per_day: Option<f64>,
    /// Percent of the label's traffic.
    pub canary_weight: f64,
    pub canary_min_n: u64,
    pub canary_margin: f64,
    /// The error level of the canary's always-valid interval.
    pub canary_alpha: f64,
    /// How long an attempted or rejected case keeps its slice from reopening.
    pub cooldown: Duration,
    pub prompts: BTreeMap<String, AgentPromptConfig>,
}

impl Settings {
    /// The `[agent]` table of `config`'s file, checked.
    pub fn load(config: &Config) -> Result<Self, AgentError> {
        let c = AgentConfig::read(config).map_err(|e| AgentError::ConfigFile(Box::new(e)))?;
        Self::from_config(&c)
    }

    /// `c`, checked: each error names the field at fault.
    pub fn from_config(c: &AgentConfig) -> Result<Self, AgentError> {
        let bad = |field: &str, message: String| AgentError::Config {
            field: field.into(),
            message,
        };
        let share = |field: &str, v: Option<f64>, default: f64| match v {
            Some(x) if !(x > 0.0 && x < 1.0) => Err(bad(
                field,
                format!("{x}: expected a number between 0 and 1"),
            )),
            Some(x) => Ok(x),
            None => Ok(default),
        };
        let window = c.window_secs.unwrap_or(3600);
        if window == 0 {
            return Err(bad("window_secs", "0: expected a positive number".into()));
        }
        let weight = c.canary_weight.unwrap_or(10);
        if !(1..=99).contains(&weight) {
            return Err(bad(
                "canary_weight",
                format!("{weight}: expected a percent between 1 and 99"),
            ));
        }
        if let Some(usd) = c.max_usd_per_day
            && !(usd.is_finite() && usd >= 0.0)
        {
            return Err(bad(
                "max_usd_per_day",
                format!("{usd}: expected a finite number of dollars, 0 or more"),
            ));
        }
        for (name, p) in &c.prompts {
            if p.max_tokens == Some(0) {
                return Err(bad(
                    &format!("prompts.{name}.max_tokens"),
                    "0: expected 1 or more tokens".into(),
                ));
            }
        }
        Ok(Self {
            policy: Policy {
                window: Duration::seconds(window as i64),
                min_n: c.min_n.unwrap_or(30).max(1),
                fdr: share("fdr", c.fdr, 0.05)?,
                min_drop: share("min_drop", c.min_drop, 0.05)?,
            },
            meta: c.meta.clone(),
            max_calls_per_day: c.max_calls_per_day.unwrap_or(5000),
            max_usd_per_day: c.max_usd_per_day,
            canary_weight: f64::from(weight),
            canary_min_n: c.canary_min_n.unwrap_or(30).max(1),
            canary_margin: share("canary_margin", c.canary_margin, 0.05)?,
            canary_alpha: 0.05,
            cooldown: Duration::hours(24),
            prompts: c.prompts.clone(),
        })
    }

    pub(super) fn prompt(&self, name: &str) -> AgentPromptConfig {
        self.prompts.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_field_at_fault() {
        let mut c = AgentConfig::default();
        assert!(Settings::from_config(&c).is_ok());
        c.fdr = Some(1.5);
        let e = Settings::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("[agent] fdr") && e.contains("1.5"), "{e}");
        c.fdr = None;
        c.canary_weight = Some(100);
        let e = Settings::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("canary_weight"), "{e}");
        c.canary_weight = None;
        let e = Settings::load(&Config::parse("[agent]\nfdr = \"high\"\n").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("fdr"), "{e}");
        c.prompts.insert(
            "news".into(),
            AgentPromptConfig {
                max_tokens: Some(0),
                ..AgentPromptConfig::default()
            },
        );
        let e = Settings::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("prompts.news.max_tokens"), "{e}");
        c.prompts.clear();
        c.max_usd_per_day = Some(-1.0);
        let e = Settings::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("max_usd_per_day"), "{e}");
    }
}
