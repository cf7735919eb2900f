//! Selection: racing rungs over the run's seeded dev order, successive halving, the best entry
//! and the ranking, and the accounting of calls racing did not spend.
//!
//! Racing and the best entry compare candidates on the examples scored for both (an unscored
//! pair is not a zero); the ranking, a heuristic order for beams and trajectories, uses each
//! entry's own mean.

use super::budget::Halt;
use super::ctx::Ctx;
use super::pool::{Entry, beats};

impl Ctx<'_> {
    /// The first `n` dev examples of the run's seeded order.
    pub fn rung(&self, n: usize) -> Vec<usize> {
        self.order.iter().copied().take(n).collect()
    }

    /// Dev examples entries `idxs` have not been evaluated on yet (what scoring them all on
    /// the whole split would cost).
    pub fn pending(&self, idxs: &[usize]) -> u64 {
        let n_dev = self.problem.dev.len();
        idxs.iter()
            .map(|&i| (0..n_dev).filter(|&k| !self.pool[i].evaluated(k)).count() as u64)
            .sum()
    }

    /// Record calls a selection strategy did not spend compared with scoring every candidate
    /// on the whole dev split.
    pub fn saved(&mut self, full_cost: u64, calls_before: u64) {
        let spent = self.ledger.metric_calls() - calls_before;
        self.ledger.saved(full_cost.saturating_sub(spent));
    }

    /// Successive halving over dev: all of `idxs` on the first rung (`minibatch` examples, fewer
    /// under a small budget), the better half on twice as many, …, until `keep` survive on the whole dev split.
    /// Returns the survivors, best first. Calls not spent on losers are counted as saved.
    pub async fn race(&mut self, idxs: Vec<usize>, keep: usize) -> Result<Vec<usize>, Halt> {
        let n_dev = self.problem.dev.len();
        let keep = keep.max(1);
        let mut alive = idxs;
        alive.dedup();
        // Under a small budget the first rung shrinks, so that the budget lasts several
        // rounds: the racers' first rung takes at most a quarter of what is left (not under 4
        // examples each).
        let left = self.budget.metric_calls_left(self.ledger.metric_calls()) as usize;
        let affordable = (left / (4 * alive.len().max(1))).max(4);
        let mut size = self.settings.minibatch.min(affordable).min(n_dev).max(1);
        let full_cost = self.pending(&alive);
        let before = self.ledger.metric_calls();
        loop {
            let rung = self.rung(size);
            for &i in &alive {
                self.score(i, &rung).await?;
            }
            let ranked = self.rank_on(&alive, &rung);
            if size >= n_dev {
                self.saved(full_cost, before);
                return Ok(ranked.into_iter().take(keep).collect());
            }
            let next = (alive.len().div_ceil(2)).max(keep);
            alive = ranked.into_iter().take(next).collect();
            size = (size * 2).min(n_dev);
        }
    }

    /// The best pool entry over the whole dev split, among those evaluated on all of it: each
    /// in turn challenges the best so far on the examples scored for both, and takes its
    /// place when its mean there is higher (so the earlier entry wins ties). The seed when
    /// nothing else is.
    pub fn best(&self) -> usize {
        let n = self.problem.dev.len();
        let all: Vec<usize> = (0..n).collect();
        let mut best: Option<usize> = None;
        for (i, e) in self.pool.iter().enumerate() {
            if !e.complete(n) || e.scores.is_empty() {
                continue;
            }
            if best.is_none_or(|b| beats(e, &self.pool[b], &all)) {
                best = Some(i);
            }
        }
        best.unwrap_or(0)
    }

    /// Entries ordered by their own mean (best first) among those evaluated on at least `min`
    /// examples and scored on some.
    pub fn ranked(&self, min: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.pool.len())
            .filter(|&i| {
                let e = &self.pool[i];
                e.evaluated_count() >= min.max(1) && !e.scores.is_empty()
            })
            .collect();
        v.sort_by(|&a, &b| {
            let (ma, mb) = (
                self.pool[a].mean().unwrap_or(0.0),
                self.pool[b].mean().unwrap_or(0.0),
            );
            mb.total_cmp(&ma).then(a.cmp(&b))
        });
        v
    }

    /// Means of entries `idxs` on the examples of `on` scored for all of them: the paired
    /// comparison ([`super::paired_means`]); `None` for an entry scored on none of `on`.
    pub fn paired_means(&self, idxs: &[usize], on: &[usize]) -> Vec<Option<f64>> {
        let entries: Vec<&Entry> = idxs.iter().map(|&i| &self.pool[i]).collect();
        super::pool::paired_means(&entries, on)
    }

    /// Entries `idxs`, best first by [`Ctx::paired_means`] on `on` (ties: the earlier entry);
    /// those scored on none of `on` last.
    pub fn rank_on(&self, idxs: &[usize], on: &[usize]) -> Vec<usize> {
        let means = self.paired_means(idxs, on);
        let mut v: Vec<(usize, Option<f64>)> = idxs.iter().copied().zip(means).collect();
        v.sort_by(|a, b| {
            let (x, y) = (
                a.1.unwrap_or(f64::NEG_INFINITY),
                b.1.unwrap_or(f64::NEG_INFINITY),
            );
            y.total_cmp(&x).then(a.0.cmp(&b.0))
        });
        v.into_iter().map(|(i, _)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::testkit::Kit;

    #[tokio::test]
    async fn racing_halves_the_field_and_keeps_the_best_on_all_of_dev() {
        // Four candidates on 16 dev examples, first rung 4: the candidate with "magic" is right
        // everywhere, the others half the time.
        let kit = Kit::new(16, 0);
        let mut ctx = kit.ctx();
        let ids: Vec<usize> = ["one", "two", "magic", "three"]
            .iter()
            .map(|w| kit.add(&mut ctx, w))
            .collect();
        let won = ctx.race(ids.clone(), 1).await.unwrap();
        assert_eq!(won, [ids[2]]);
        assert_eq!(
            ctx.pool[ids[2]].scores.len(),
            16,
            "the winner ran all of dev"
        );
        assert_eq!(ctx.pool[ids[2]].mean(), Some(1.0));
        // Rungs 4, 8, 16: four on the first, two on the second, one on the last.
        assert_eq!(ctx.metric_calls(), 4 * 4 + 2 * 4 + 8);
        assert_eq!(ctx.ledger.saved_calls(), 4 * 16 - ctx.metric_calls());
        let losers_full = ids
            .iter()
            .filter(|&&i| i != ids[2] && ctx.pool[i].scores.len() == 16)
            .count();
        assert_eq!(losers_full, 0, "no loser reached the whole split");
        // The best (on all of dev) and the ranking follow.
        assert_eq!(ctx.best(), ids[2]);
        assert_eq!(ctx.ranked(4)[0], ids[2]);
        // A scored entry is never scored twice.
        let before = ctx.metric_calls();
        ctx.score(ids[2], &ctx.rung(16)).await.unwrap();
        assert_eq!(ctx.metric_calls(), before);
    }

    #[tokio::test]
    async fn rungs_are_prefixes_of_one_seeded_order() {
        let kit = Kit::new(10, 0);
        let ctx = kit.ctx();
        let all = ctx.rung(10);
        assert_eq!(ctx.rung(4), all[..4]);
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(all, sorted, "shuffled by the run seed");
        assert_eq!(kit.ctx().rung(10), all, "and the same for the same seed");
    }
}
