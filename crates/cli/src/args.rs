//! Every command-line type, in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// metaprompt: a meta-prompting engine. A meta layer (one LLM call) writes, tests and rewrites
/// the prompt that an execution layer (another LLM call) runs, until a metric says it is better.
#[derive(Debug, Parser)]
#[command(
    name = "metaprompt",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Config file [default: ./metaprompt.toml, else <user config dir>/metaprompt/metaprompt.toml]
    #[arg(long, global = true, env = "METAPROMPT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Response cache file [default: [cache].path in config, else <user cache dir>/metaprompt/responses.sqlite]
    #[arg(long, global = true, env = "METAPROMPT_CACHE", value_name = "PATH")]
    pub cache_path: Option<PathBuf>,
    /// Neither read nor write the response cache for this run
    #[arg(long, global = true, env = "METAPROMPT_NO_CACHE", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_cache: bool,
    /// Prompt library file [default: [library].path in config, else <user data dir>/metaprompt/library.sqlite]
    #[arg(long, global = true, env = "METAPROMPT_LIBRARY", value_name = "PATH")]
    pub library: Option<PathBuf>,
    /// Do not store generate / optimize / translate results in the prompt library
    #[arg(long, global = true, env = "METAPROMPT_NO_LIBRARY", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_library: bool,
    /// Who is acting, as recorded in the library [default: $USER]
    #[arg(long, global = true, env = "METAPROMPT_AUTHOR", value_name = "NAME")]
    pub author: Option<String>,
    /// More log output (-v: debug, -vv: trace); METAPROMPT_LOG takes a tracing filter
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one request to a model and print the answer, its usage and cost (checks a configuration)
    Complete(CompleteArgs),
    /// Inspect or empty the persistent response cache
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Show the configuration in effect, or how a model spec resolves
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Score a prompt on a task's examples: mean with a 95% interval, cost, time, per-example JSONL
    Eval(EvalArgs),
    /// Score two prompts on the same examples and test whether the difference is real
    Compare(CompareArgs),
    /// Fetch and list embedded (local) models
    #[command(subcommand)]
    Model(ModelCommand),
    /// Write a prompt from a task description: the meta model analyses the task, writes N candidates, they are checked and scored, the best is kept
    Generate(GenerateArgs),
    /// Rewrite a prompt for another model and measure parity on the task's data
    Translate(TranslateArgs),
    /// Improve a task's prompt in a budgeted loop (generate, test, evaluate, refine) with a published algorithm
    Optimize(Box<OptimizeArgs>),
    /// List or export the meta-prompts (the templates the meta model runs)
    #[command(subcommand)]
    MetaPrompts(MetaPromptsCommand),
    /// The prompt library: versions, lineage, labels, export and import
    #[command(subcommand)]
    Prompts(PromptsCommand),
    /// Review machine-made prompt versions before they ship
    #[command(subcommand)]
    Review(ReviewCommand),
    /// Serve the library over HTTP: prompts by label, runs, feedback, an OpenAI-compatible endpoint, review
    Serve(ServeArgs),
    /// API tokens of the server (roles: viewer, runner, editor, reviewer, admin)
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The prompt-engineer agent: watch served prompts' live outcomes per slice, find the slice that got worse, diagnose it, propose a fix for review, canary and ship it
    Agent(AgentArgs),
    /// Run a split's examples through a running server as an application would, and compare every answer, the settings and the score with the offline evaluation of the same version
    CheckServe(CheckServeArgs),
}

#[derive(Debug, Args)]
pub struct CheckServeArgs {
    /// The task file (its examples, metrics and settings)
    pub task: PathBuf,
    /// The served prompt: NAME (production), NAME@LABEL or NAME@vN
    pub reference: String,
    /// The server's base URL
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A runner token (or METAPROMPT_TOKEN); none with --insecure-local
    #[arg(long, env = "METAPROMPT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// The first N examples of the split only
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the comparison as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    /// One pass, then exit: report, open cases for new findings, file proposals, follow reviews and canaries
    #[arg(long, conflicts_with = "watch")]
    pub once: bool,
    /// A pass every --interval until interrupted (Ctrl-C stops it between passes)
    #[arg(long)]
    pub watch: bool,
    /// Time between passes with --watch
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Only report: open no case, spend nothing, change nothing
    #[arg(long)]
    pub report_only: bool,
    /// The current window (e.g. 30m, 1h, 1d); the baseline is the window before it [default: [agent] window_secs, else 1h]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub window: Option<std::time::Duration>,
    /// Fewer scored outcomes than this on either side of a comparison: no test [default: [agent] min_n, else 30]
    #[arg(long)]
    pub min_n: Option<u64>,
    /// False-discovery rate across every slice and comparison of the pass [default: [agent] fdr, else 0.05]
    #[arg(long)]
    pub fdr: Option<f64>,
    /// Only show this prompt (the pass still covers every prompt)
    #[arg(long)]
    pub prompt: Option<String>,
    /// Print the pass as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Per prompt: slices with their rates and intervals, findings, and the agent's cases (proposals, canaries) with their state
    Status {
        #[arg(long)]
        prompt: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: an IP or a host name with a port (localhost:8080) [default: [server].listen in config, else 127.0.0.1:8080]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Serve without tokens: every caller may do everything. Only on a loopback address
    #[arg(long)]
    pub insecure_local: bool,
    /// Print the address once listening, as JSON on stdout (for scripts and tests)
    #[arg(long)]
    pub print_address: bool,
    /// Run the prompt-engineer agent inside the server: a pass every --agent-interval ([agent] policy from the config)
    #[arg(long)]
    pub agent: bool,
    /// Time between the agent's passes with --agent
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub agent_interval: std::time::Duration,
    /// A folder of task folders (DIR/NAME/task.toml) that runs over HTTP may name by NAME; repeatable, added to [server] task_roots
    #[arg(long = "tasks", value_name = "DIR")]
    pub tasks: Vec<std::path::PathBuf>,
    /// A host name the server answers to besides IP addresses and localhost ("*": any); repeatable, added to [server] hosts
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; its secret is printed once (only its hash is stored)
    Create {
        /// viewer (read), runner (run prompts, send feedback), editor (add versions, move labels, start runs), reviewer (approve, reject, move production), admin (tokens)
        #[arg(long)]
        role: String,
        /// A name for the token (who or what uses it)
        #[arg(long)]
        name: String,
    },
    /// List tokens (names, roles, when made, revoked or not)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by name (the server notices within seconds)
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PromptsCommand {
    /// Add a prompt file as a new version (made by a person)
    Add {
        /// The prompt's name in the library
        name: String,
        /// A prompt file (.toml), a chat-messages array (.json) or a text template (anything else)
        file: PathBuf,
        /// Why this version (recorded with it)
        #[arg(long, short)]
        message: Option<String>,
        /// The version it derives from (NAME@REF) [default: the newest version]
        #[arg(long, value_name = "REF")]
        parent: Option<String>,
        /// Moving `production` to a machine-made version of this prompt needs an approval
        #[arg(long)]
        review_required: bool,
        /// Record how it runs from this task (its execution model and [models] settings, its
        /// choice labels), where the file does not say, so it is served as the task evaluates it
        #[arg(long, value_name = "TASK")]
        task: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Every prompt: versions, labels, versions waiting for review
    List {
        #[arg(long)]
        json: bool,
    },
    /// One version: metadata, content, evidence, labels
    Show {
        /// NAME (newest), NAME@vN, NAME@LABEL, NAME@HASH or a hash prefix
        reference: String,
        #[arg(long)]
        json: bool,
    },
    /// The difference between two versions [default B: A's parent]
    Diff { a: String, b: Option<String> },
    /// Point a label (production, staging, any name) at a version
    Label {
        /// The version (NAME@vN, NAME@HASH, …)
        reference: String,
        label: String,
        /// Why (recorded)
        #[arg(long, short)]
        comment: Option<String>,
        /// Canary: the version serves this percent of the label's traffic (sticky per caller
        /// key) while the label keeps its version for the rest; 100 moves the label, 0 ends
        /// the split
        #[arg(long, value_name = "PERCENT")]
        weight: Option<f64>,
        /// Point the label at a version rejected in review anyway (never `production`); the
        /// label is flagged as rejected wherever it shows
        #[arg(long, conflicts_with = "weight")]
        force: bool,
    },
    /// Move a label back to the version it pointed at before
    Rollback {
        name: String,
        #[arg(long, default_value = "production")]
        label: String,
        /// Why (recorded)
        #[arg(long, short)]
        comment: Option<String>,
    },
    /// Write a version as a plain file that works outside metaprompt
    Export {
        reference: String,
        /// The file [default: standard output]; its extension picks the format
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// toml (metaprompt's prompt file), text (one template with {{ field }} placeholders) or json (chat messages) [default: from --out, else toml]
        #[arg(long, value_parser = ["toml", "text", "json"])]
        format: Option<String>,
    },
    /// Read a plain file (as written by export) back in as a new version
    Import {
        file: PathBuf,
        /// The prompt's name [default: the file's `name`, else its stem]
        #[arg(long)]
        name: Option<String>,
        #[arg(long, short)]
        message: Option<String>,
        #[arg(long)]
        review_required: bool,
        #[arg(long)]
        json: bool,
    },
    /// A prompt's history: versions, reviews, label moves, rollbacks, runs — who, when, why
    Log {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Require (or stop requiring) review before `production` moves to a machine-made version
    Policy {
        name: String,
        #[arg(long, action = clap::ArgAction::Set, value_name = "BOOL")]
        review_required: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Versions waiting for review
    List {
        #[arg(long)]
        json: bool,
    },
    /// What a reviewer needs: the diff against the version it would replace, evidence, constraint checks, cost
    Show {
        reference: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a version (it may then be labeled production)
    Approve {
        reference: String,
        #[arg(long, short)]
        comment: Option<String>,
    },
    /// Reject a version (it can no longer be labeled production)
    Reject {
        reference: String,
        /// Why (required)
        #[arg(long, short)]
        comment: String,
    },
}

/// The meta layer's settings, shared by the commands that use it.
#[derive(Debug, Args)]
pub struct MetaArgs {
    /// The meta model, which writes prompts [default: the task's models.meta, else local:qwen2.5-coder-1.5b-instruct]
    #[arg(long, value_name = "MODEL")]
    pub meta: Option<String>,
    /// System message for the chat-form meta-prompts (`@FILE` reads a file) [default: the task's models.meta_system, else the template's]
    #[arg(long, value_name = "TEXT")]
    pub meta_system: Option<String>,
    /// A directory of meta-prompt files (`<name>.toml`) replacing the built-in ones
    #[arg(long, env = "METAPROMPT_TEMPLATES", value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// The judge of the protected-constraint guardrail [default: the meta model when it is instruction-tuned; none for base models]
    #[arg(long, value_name = "MODEL")]
    pub judge: Option<String>,
    /// A protected constraint every prompt must keep (repeatable; added to the task's and the prompt's)
    #[arg(long = "constraint", value_name = "TEXT")]
    pub constraints: Vec<String>,
    /// Seed of the meta model's sampling and of every random choice
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// Single-pass meta-layer commands (`generate`, `translate`).
#[derive(Debug, Args)]
pub struct OnceArgs {
    /// Sampling temperature of the meta model [default: the task's models.meta_temperature, else 0.8]
    #[arg(long, value_name = "T")]
    pub meta_temperature: Option<f32>,
    /// Where to write the prompt file (a `.report.json` with every candidate goes beside it) [default: <task dir>/results/<name>.toml, else ./<name>.toml]
    #[arg(short, long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Evaluate on this split
    #[arg(long, default_value = "dev")]
    pub split: String,
    /// Evaluate on the first N examples of the split only
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// The task file (optional with --resume)
    #[arg(required_unless_present = "resume")]
    pub task: Option<PathBuf>,
    /// The algorithm: auto, fewshot, opro, ape, protegi, gepa, evolve, mipro
    #[arg(short, long, default_value = "auto")]
    pub algo: String,
    /// Continue the run in this directory from its last checkpoint
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "task")]
    pub resume: Option<PathBuf>,
    /// Where the run keeps its checkpoint and reports [default: <task dir>/runs/<task>-<algo>-<time>]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// The execution model [default: the task's models.execution]
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Start from this prompt file instead of the task's seed prompt
    #[arg(short, long, value_name = "FILE")]
    pub prompt: Option<PathBuf>,
    /// The prompt's name in the library [default: the task's name]
    #[arg(long)]
    pub name: Option<String>,
    /// Most rounds
    #[arg(long, default_value_t = 6, value_parser = at_least_one)]
    pub rounds: usize,
    /// Stop after this many rounds without significant improvement
    #[arg(long, default_value_t = 2, value_parser = at_least_one)]
    pub patience: usize,
    /// Candidates proposed per round
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub per_round: u32,
    /// First racing rung: dev examples every new candidate is scored on before losers are dropped
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    pub minibatch: usize,
    /// Demonstrations per prompt in demonstration search
    #[arg(long, default_value_t = 4)]
    pub demos: usize,
    /// Meta temperature of the first round (exploration)
    #[arg(long, default_value_t = 0.9, value_parser = temperature)]
    pub explore: f32,
    /// Meta temperature of the last round (exploitation)
    #[arg(long, default_value_t = 0.2, value_parser = temperature)]
    pub exploit: f32,
    /// ape, mipro: sample twice as many instructions and race only those the execution model finds most likely to give the expected outputs (needs a model that scores continuations, such as the embedded one)
    #[arg(long)]
    pub proxy: bool,
    /// auto: do not try the worked-answer form of the prompt (in round 2 the meta model writes short working lines, each carrying the result so far, for the demonstrations; the prompt then works its answer out and answers after "Answer:")
    #[arg(long)]
    pub no_worked: bool,
    /// Cap on the search's metric calls (one example scored by one prompt); the final test evaluation (2 × the test split) is counted apart [default: the task's budget, else 1500]
    #[arg(long)]
    pub max_metric_calls: Option<u64>,
    /// Cap on meta-model calls [default: the task's budget, else 40; none when only --max-meta-tokens is given]
    #[arg(long)]
    pub max_meta_calls: Option<u64>,
    /// Cap on the tokens the meta model generates: the budget to give a local meta model, whose samples share their prompt's prefill (each meta call asks for as many samples as the tokens left pay for)
    #[arg(long, value_name = "TOKENS")]
    pub max_meta_tokens: Option<u64>,
    /// Cap on the meta layer's cost in dollars
    #[arg(long, value_name = "USD", value_parser = dollars)]
    pub max_meta_cost: Option<f64>,
    /// Cap on the total cost in dollars
    #[arg(long, value_name = "USD", value_parser = dollars)]
    pub max_cost: Option<f64>,
    /// Cap on wall time in seconds
    #[arg(long, value_name = "SECS")]
    pub max_wall: Option<u64>,
    /// Use only the first N dev examples
    #[arg(long)]
    pub dev_limit: Option<usize>,
    /// Use only the first N test examples (0: no test evaluation)
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Share of the dev examples (the last ones) held out of the search: the best candidate must beat the seed on these alone to be kept, so choosing it does not flatter the verdict (the winner's curse)
    #[arg(long, value_name = "SHARE")]
    pub hold_out: Option<f64>,
    /// Share of a round's (candidate, example) pairs that may stay unscored (failed calls or metrics, left out of comparisons) before the run stops [default: 0.05]
    #[arg(long, value_name = "SHARE")]
    pub unscored_rate: Option<f64>,
    /// The most tokens a candidate prompt may spend on itself (instruction, demonstrations, the template's words; estimated at 4 bytes a token): longer candidates are rejected before they are scored
    #[arg(long, value_name = "N")]
    pub max_prompt_tokens: Option<u64>,
    /// Test-split scores (seed and kept prompt together) that may stay unscored (a failed model call or metric, left out of the test score) before the command fails
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_unscored: u64,
    /// Ask for confirmation when the projected cost is above this many dollars
    #[arg(long, value_name = "USD", default_value_t = 1.0, value_parser = dollars)]
    pub confirm_above: f64,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
    #[command(flatten)]
    pub meta: MetaArgs,
}

/// A count of at least 1 (`optimize --rounds`, `--patience`, `--minibatch`).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A sampling temperature: a finite number, 0 or more.
fn temperature(s: &str) -> Result<f32, String> {
    let t: f32 = s.parse().map_err(|e| format!("{e}"))?;
    match metaprompt_llm::types::temperature_problem(t) {
        Some(p) => Err(p),
        None => Ok(t),
    }
}

/// Dollars: a finite number, 0 or more.
fn dollars(s: &str) -> Result<f64, String> {
    let usd: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if usd.is_finite() && usd >= 0.0 {
        Ok(usd)
    } else {
        Err(format!(
            "must be a finite number of dollars, 0 or more, got {usd}"
        ))
    }
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What the prompt must do [default: the task's description]
    pub description: Option<String>,
    /// A task file: its data (demonstrations, evaluation), metrics, constraints and models
    #[arg(long, value_name = "TASK")]
    pub task: Option<PathBuf>,
    /// How many candidate prompts to write
    #[arg(short = 'n', long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub candidates: u32,
    /// Demonstrations from the train split to put in the prompt (0: none)
    #[arg(long, default_value_t = 4)]
    pub demos: usize,
    /// The execution model, which runs the prompt [default: the task's models.execution, else local:gemma-3-270m]
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Name of the prompt [default: <task>-generated, else from the description]
    #[arg(long)]
    pub name: Option<String>,
    /// Do not evaluate the candidates (keep the first that passes the checks)
    #[arg(long)]
    pub no_eval: bool,
    #[command(flatten)]
    pub meta: MetaArgs,
    #[command(flatten)]
    pub once: OnceArgs,
}

#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// The prompt file to translate
    pub prompt: PathBuf,
    /// The target model
    #[arg(long, value_name = "MODEL")]
    pub to: String,
    /// The task whose data measures parity
    #[arg(long, value_name = "TASK")]
    pub task: PathBuf,
    /// The model the prompt was written for [default: the prompt's target_model, else the task's models.execution]
    #[arg(long, value_name = "MODEL")]
    pub from: Option<String>,
    /// How many rewrites to sample (besides the mechanical layout conversion)
    #[arg(short = 'n', long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub variants: u32,
    /// Name of the translated prompt [default: <prompt>-for-<target>]
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub meta: MetaArgs,
    #[command(flatten)]
    pub once: OnceArgs,
}

#[derive(Debug, Subcommand)]
pub enum MetaPromptsCommand {
    /// The meta-prompts in effect and where each comes from
    List {
        /// A directory of meta-prompt files replacing the built-in ones
        #[arg(long, env = "METAPROMPT_TEMPLATES", value_name = "DIR")]
        templates: Option<PathBuf>,
    },
    /// Write the built-in meta-prompts to a directory, to edit and use with --templates
    Export {
        /// The directory (created if missing)
        dir: PathBuf,
        /// Overwrite files that exist
        #[arg(long)]
        force: bool,
    },
}

/// What every evaluation shares.
#[derive(Debug, Args)]
pub struct EvalScope {
    /// The task file
    pub task: PathBuf,
    /// Which split to evaluate on
    #[arg(long, default_value = "dev")]
    pub split: String,
    /// Evaluate only N examples of the split (the first N, or a seeded sample with --sample-seed)
    #[arg(long)]
    pub limit: Option<usize>,
    /// Draw the --limit examples at random with this seed instead of taking the first ones
    #[arg(long, requires = "limit")]
    pub sample_seed: Option<u64>,
    /// The execution model [default: the task's models.execution]
    #[arg(short, long)]
    pub model: Option<String>,
    /// Examples that may stay unscored (a failed model call or metric, left out of the score) before the command fails
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_unscored: usize,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub scope: EvalScope,
    /// A prompt file [default: the task's seed prompt]
    #[arg(short, long)]
    pub prompt: Option<PathBuf>,
    /// Per-example results [default: <task dir>/results/<prompt>.<split>.jsonl]
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub scope: EvalScope,
    /// The incumbent prompt file
    pub a: PathBuf,
    /// The challenger prompt file
    pub b: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Fetch and verify a model: a known name (default: gemma-3-270m), or an HTTPS URL to a .gguf with --sha256
    Pull {
        /// A known model name, or an http(s) URL of a .gguf file
        target: Option<String>,
        /// Expected SHA-256 of a file pulled from a URL (required for URLs)
        #[arg(long)]
        sha256: Option<String>,
        /// Fetch again even if a verified file is present
        #[arg(long)]
        force: bool,
    },
    /// Known models and pulled files, with where they are stored
    List,
}

#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// Model spec (`local:gemma-3-270m`, `openai:gpt-4o-mini`, `anthropic:claude-3-5-haiku-latest`, or a name from [models] in config)
    #[arg(
        short,
        long,
        env = "METAPROMPT_MODEL",
        default_value = "local:gemma-3-270m"
    )]
    pub model: String,
    /// The prompt; `-` or nothing reads standard input
    pub text: Option<String>,
    /// A system message (chat models)
    #[arg(long)]
    pub system: Option<String>,
    /// Send the text as a raw completion prompt (base models), whatever the model's format
    #[arg(long, conflicts_with = "system")]
    pub raw: bool,
    /// Sampling temperature (0: the most likely answer)
    #[arg(short, long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Most tokens to generate
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Stop sequence (repeatable)
    #[arg(long)]
    pub stop: Vec<String>,
    /// Seed sent to providers that support one (mixed with --sample)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Sample index: distinct samples of the same request are cached separately
    #[arg(long, default_value_t = 0)]
    pub sample: u32,
    /// Print the whole response (text, usage, cost, latency, cached) as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries, hits and size, overall and per model
    Stats {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Delete cached responses (all, or one model's)
    Clear {
        /// Only this model (a spec or its `provider:model` name)
        #[arg(long)]
        model: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Where the config comes from, the cache in use, and the providers and named models
    Show,
    /// Every setting a model spec resolves to (endpoint, format, pricing, limits, key variable)
    Model {
        /// A model spec or a name from [models]
        spec: String,
    },
}
