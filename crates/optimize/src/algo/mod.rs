//! The optimizers: one file each, behind one trait ([`Optimizer`], defined beside the
//! [`Ctx`] it works through in [`crate::run`]). Each round an optimizer proposes
//! candidates through the run's [`Ctx`] and selects among them; the run owns the budget,
//! evaluation, checkpoints, convergence and the verdict.
//!
//! Adding an algorithm: a file here with a type implementing [`Optimizer`], and one line in
//! [`by_name`].

use crate::run::Ctx;
pub use crate::run::Optimizer;

pub mod ape;
pub mod auto;
pub mod evolve;
pub mod fewshot;
pub mod gepa;
pub mod mipro;
pub mod opro;
pub mod protegi;

/// The algorithms, by command-line name.
pub const NAMES: &[&str] = &[
    "auto", "fewshot", "opro", "ape", "protegi", "gepa", "evolve", "mipro",
];

pub fn by_name(name: &str) -> Option<Box<dyn Optimizer>> {
    Some(match name {
        "auto" => Box::new(auto::Auto),
        "fewshot" => Box::new(fewshot::FewShot),
        "opro" => Box::new(opro::Opro),
        "ape" => Box::new(ape::Ape),
        "protegi" => Box::new(protegi::Protegi),
        "gepa" => Box::new(gepa::Gepa),
        "evolve" => Box::new(evolve::Evolve),
        "mipro" => Box::new(mipro::Mipro),
        _ => return None,
    })
}

/// Examples from the train split as the meta-prompts show them.
pub(crate) fn shown(ctx: &mut Ctx<'_>, n: usize) -> Vec<serde_json::Value> {
    let brief = &ctx.problem.brief;
    let picked = crate::brief::pick_demos(
        brief,
        &ctx.problem.train,
        n,
        rand::Rng::random(&mut ctx.rng),
    );
    picked.iter().map(|e| brief.show(e)).collect()
}
