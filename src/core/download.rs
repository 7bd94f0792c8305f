//! Download planning, without I/O: which source fetches which bytes, when a slow
//! source loses its range, when the file is ready to verify, and, when the whole
//! file's SHA-1 does not match, how the lying source is found.
//!
//! The file is cut into blocks of equal size (the last may be shorter). A source
//! is given a *chunk*, a run of missing blocks fetched with one HTTP range
//! request, and reports each block as it completes. The shell feeds events with
//! `now` passed in and carries out the [`Action`]s that [`Planner::poll`] returns.
//!
//! # Finding a liar with only a whole-file hash
//!
//! Every block remembers which source supplied it. When the finished file's SHA-1
//! is wrong, the planner *audits*: the shell gives it a digest of every block as
//! written, and each block is fetched again from a source other than the one that
//! supplied it. Equal digests confirm the block (two sources agree). Different
//! digests make it *disputed*, and a third source decides: if it agrees with what
//! is written, the checker lied; if it agrees with the checker, the supplier lied
//! and the third source's bytes are written instead. A source caught lying is
//! dropped at once. A block that cannot get the sources it needs (or whose three
//! versions all differ) stays undecided. When every block is settled the file is
//! hashed again; a second mismatch fails the download. Colluding liars can defeat
//! the vote, but never the final hash, so a wrong byte is never delivered.

use std::time::{Duration, Instant};

/// A source, named by the shell (an index into its own list).
pub type SourceId = usize;

/// A block's SHA-1, as the shell computes it for an audit.
pub type Digest = [u8; 20];

/// Tunables; the defaults suit downloads over the Internet, tests shorten them.
#[derive(Clone, Debug)]
pub struct PlanConfig {
    /// Largest chunk given to a source at once, in blocks.
    pub max_chunk_blocks: u64,
    /// A busy source that delivers nothing for this long loses its chunk.
    pub stall: Duration,
    /// Failures after which a source is given up.
    pub max_failures: u32,
    /// Wait before a failed source is tried again (doubled per failure).
    pub retry: Duration,
    /// An idle source takes half of a busy one's remaining blocks when it is this
    /// many times faster.
    pub steal_factor: f64,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            max_chunk_blocks: 16,
            stall: Duration::from_secs(20),
            max_failures: 5,
            retry: Duration::from_secs(2),
            steal_factor: 2.0,
        }
    }
}

/// Blocks a download is cut into, at most: the planner's memory is bounded
/// whatever size a source claims.
pub const MAX_BLOCKS: u64 = 1 << 16;

/// The block size for a file of `size` bytes: 64 KiB up to 64 MiB, then 1 MiB,
/// and above 64 GiB the power of two that keeps the file within
/// [`MAX_BLOCKS`] blocks.
pub fn block_size_for(size: u64) -> u64 {
    if size <= 64 << 20 {
        64 << 10
    } else {
        size.div_ceil(MAX_BLOCKS).next_power_of_two().max(1 << 20)
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fetch bytes `start..end` from `source` and write them in place.
    Fetch {
        source: SourceId,
        start: u64,
        end: u64,
    },
    /// Stop `source`'s fetch; its unfinished blocks have been given back.
    Abort { source: SourceId },
    /// Shorten `victim`'s fetch to end at byte `at` (or as close after it as its
    /// progress allows) and report with [`Planner::stolen`], so that `thief` can
    /// take the rest.
    Steal {
        victim: SourceId,
        thief: SourceId,
        at: u64,
    },
    /// Every block is written: hash the file and report with [`Planner::verified`].
    Verify,
    /// The hash was wrong: compute every block's digest and give them to
    /// [`Planner::audit`].
    Digests,
    /// Fetch block `block` from `source` into memory, digest it and report with
    /// [`Planner::checked`].
    Check { source: SourceId, block: u64 },
    /// The file is complete and verified.
    Finish,
    /// The download cannot succeed.
    Fail(String),
}

/// What to do with the bytes of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// What is written stands; discard the fetched bytes.
    Keep,
    /// Write the fetched bytes over the block.
    Write,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Missing,
    Fetching(SourceId),
    /// Written; supplied by this source (None: in an earlier run).
    Done(Option<SourceId>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Audit {
    Unchecked {
        disk: Digest,
        by: Option<SourceId>,
    },
    Checking {
        disk: Digest,
        by: Option<SourceId>,
        checker: SourceId,
    },
    Disputed {
        disk: Digest,
        by: Option<SourceId>,
        other: Digest,
        other_by: SourceId,
    },
    Deciding {
        disk: Digest,
        by: Option<SourceId>,
        other: Digest,
        other_by: SourceId,
        checker: SourceId,
    },
    Settled,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Idle,
    /// Fetching blocks `next..end`; `next` is the first not yet reported.
    Busy {
        next: u64,
        end: u64,
        since: Instant,
        last: Instant,
    },
    Checking {
        block: u64,
        since: Instant,
    },
    /// Failed; may be used again from `until`.
    Waiting {
        until: Instant,
    },
    Dropped(String),
}

#[derive(Clone, Debug)]
struct Source {
    state: State,
    failures: u32,
    /// Bytes delivered and time spent busy, for the rate.
    bytes: u64,
    busy: Duration,
    /// Bytes of the blocks this source supplied that ended up in the file.
    supplied: u64,
}

impl Source {
    fn rate(&self, now: Instant, block: u64) -> Option<f64> {
        let time = match self.state {
            State::Busy { since, .. } => self.busy + now.duration_since(since),
            _ => self.busy,
        };
        let bytes = self.bytes;
        // Known once a block has come; a very fast source is timed as 1 ms.
        (bytes >= block).then(|| bytes as f64 / time.as_secs_f64().max(0.001))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Fetching,
    Verifying,
    Digesting,
    Auditing,
    Finished,
    Failed,
}

/// The plan of one download.
#[derive(Debug)]
pub struct Planner {
    size: u64,
    block: u64,
    blocks: Vec<Block>,
    audit: Vec<Audit>,
    sources: Vec<Source>,
    config: PlanConfig,
    phase: Phase,
    audits: u32,
    /// A steal handed to the shell and not yet reported.
    stealing: Option<(SourceId, SourceId)>,
}

impl Planner {
    /// A plan for `size` bytes in blocks of `block` bytes, where the blocks marked
    /// in `have` are already written (by an earlier run).
    pub fn new(size: u64, block: u64, have: &[bool], config: PlanConfig) -> Planner {
        let block = block.max(1);
        let count = size.div_ceil(block) as usize;
        let blocks = (0..count)
            .map(|i| {
                if have.get(i).copied().unwrap_or(false) {
                    Block::Done(None)
                } else {
                    Block::Missing
                }
            })
            .collect();
        Planner {
            size,
            block,
            blocks,
            audit: Vec::new(),
            sources: Vec::new(),
            config,
            phase: Phase::Fetching,
            audits: 0,
            stealing: None,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn block_size(&self) -> u64 {
        self.block
    }

    pub fn block_count(&self) -> u64 {
        self.blocks.len() as u64
    }

    /// Bytes `start..end` of block `b`.
    pub fn block_range(&self, b: u64) -> (u64, u64) {
        let start = b * self.block;
        (start, (start + self.block).min(self.size))
    }

    /// Which blocks are written, for the resume state.
    pub fn have(&self) -> Vec<bool> {
        self.blocks
            .iter()
            .map(|b| matches!(b, Block::Done(_)))
            .collect()
    }

    /// Bytes written so far.
    pub fn done_bytes(&self) -> u64 {
        (0..self.block_count())
            .filter(|&b| matches!(self.blocks[b as usize], Block::Done(_)))
            .map(|b| {
                let (s, e) = self.block_range(b);
                e - s
            })
            .sum()
    }

    /// Sources that are not dropped.
    pub fn live_sources(&self) -> usize {
        self.sources
            .iter()
            .filter(|s| !matches!(s.state, State::Dropped(_)))
            .count()
    }

    /// Sources fetching or checking right now.
    pub fn active_sources(&self) -> usize {
        self.sources
            .iter()
            .filter(|s| matches!(s.state, State::Busy { .. } | State::Checking { .. }))
            .count()
    }

    /// Bytes each source supplied to the file (a short last block counts as
    /// what it is).
    pub fn supplied(&self, source: SourceId) -> u64 {
        self.sources.get(source).map_or(0, |s| s.supplied)
    }

    /// Why a source was dropped, if it was.
    pub fn dropped(&self, source: SourceId) -> Option<&str> {
        match &self.sources.get(source)?.state {
            State::Dropped(why) => Some(why),
            _ => None,
        }
    }

    /// Adds a source; its id is the number of sources added before it.
    pub fn add_source(&mut self) -> SourceId {
        self.sources.push(Source {
            state: State::Idle,
            failures: 0,
            bytes: 0,
            busy: Duration::ZERO,
            supplied: 0,
        });
        self.sources.len() - 1
    }

    /// A block of `source`'s fetch has been written.
    pub fn block_done(&mut self, source: SourceId, block: u64, now: Instant) {
        let Some(s) = self.sources.get_mut(source) else {
            return;
        };
        let State::Busy {
            next, end, last, ..
        } = &mut s.state
        else {
            return;
        };
        if block != *next || block >= *end {
            return;
        }
        *next += 1;
        *last = now;
        let (a, b) = (
            block * self.block,
            ((block + 1) * self.block).min(self.size),
        );
        s.bytes += b - a;
        s.supplied += b - a;
        s.failures = 0;
        let finished = *next == *end;
        self.blocks[block as usize] = Block::Done(Some(source));
        if finished {
            self.idle(source, now);
        }
    }

    fn idle(&mut self, source: SourceId, now: Instant) {
        let s = &mut self.sources[source];
        if let State::Busy { since, .. } | State::Checking { since, .. } = s.state {
            s.busy += now.duration_since(since);
        }
        if !matches!(s.state, State::Dropped(_)) {
            s.state = State::Idle;
        }
    }

    /// Gives back the blocks `source` was fetching or checking.
    fn release(&mut self, source: SourceId) {
        match self.sources[source].state {
            State::Busy { next, end, .. } => {
                for b in next..end {
                    if self.blocks[b as usize] == Block::Fetching(source) {
                        self.blocks[b as usize] = Block::Missing;
                    }
                }
            }
            State::Checking { block, .. } => {
                self.audit[block as usize] = match self.audit[block as usize] {
                    Audit::Checking { disk, by, .. } => Audit::Unchecked { disk, by },
                    Audit::Deciding {
                        disk,
                        by,
                        other,
                        other_by,
                        ..
                    } => Audit::Disputed {
                        disk,
                        by,
                        other,
                        other_by,
                    },
                    a => a,
                };
            }
            _ => {}
        }
        if let Some((v, t)) = self.stealing {
            if v == source || t == source {
                self.stealing = None;
            }
        }
    }

    /// `source` failed (connection, HTTP error, busy); it is tried again later
    /// (after `retry_after` if it said so) unless it failed too often.
    pub fn failed(&mut self, source: SourceId, now: Instant, retry_after: Option<Duration>) {
        if source >= self.sources.len() || matches!(self.sources[source].state, State::Dropped(_)) {
            return;
        }
        self.idle_time(source, now);
        self.release(source);
        let s = &mut self.sources[source];
        s.failures += 1;
        if s.failures >= self.config.max_failures {
            s.state = State::Dropped(format!("failed {} times", s.failures));
        } else {
            let backoff = self.config.retry * 2u32.pow(s.failures.saturating_sub(1).min(6));
            let wait = retry_after.map_or(backoff, |r| {
                r.clamp(self.config.retry, Duration::from_secs(120))
            });
            s.state = State::Waiting { until: now + wait };
        }
    }

    fn idle_time(&mut self, source: SourceId, now: Instant) {
        let s = &mut self.sources[source];
        if let State::Busy { since, .. } | State::Checking { since, .. } = s.state {
            s.busy += now.duration_since(since);
        }
    }

    /// `source` is not to be used again (wrong size or hash, caught lying).
    pub fn drop_source(&mut self, source: SourceId, why: &str) {
        if source >= self.sources.len() {
            return;
        }
        self.release(source);
        self.sources[source].state = State::Dropped(why.to_string());
    }

    /// The shell shortened `victim`'s fetch to end at byte `at` (a block
    /// boundary), or could not (`None`: it had already passed the end).
    pub fn stolen(&mut self, victim: SourceId, at: Option<u64>, now: Instant) -> Option<Action> {
        let (v, thief) = self.stealing.take()?;
        if v != victim {
            return None;
        }
        let at_block = at? / self.block;
        let State::Busy { next, end, .. } = &mut self.sources[victim].state else {
            return None;
        };
        if at_block < *next || at_block >= *end {
            return None;
        }
        let old_end = *end;
        *end = at_block;
        if *next == *end {
            self.idle(victim, now);
        }
        if self.sources[thief].state != State::Idle {
            for b in at_block..old_end {
                self.blocks[b as usize] = Block::Missing;
            }
            return None;
        }
        Some(self.assign(thief, at_block, old_end, now))
    }

    fn assign(&mut self, source: SourceId, first: u64, end: u64, now: Instant) -> Action {
        for b in first..end {
            self.blocks[b as usize] = Block::Fetching(source);
        }
        self.sources[source].state = State::Busy {
            next: first,
            end,
            since: now,
            last: now,
        };
        Action::Fetch {
            source,
            start: first * self.block,
            end: (end * self.block).min(self.size),
        }
    }

    /// The file's hash matched (`true`) or not.
    pub fn verified(&mut self, ok: bool) {
        if self.phase != Phase::Verifying {
            return;
        }
        self.phase = if ok {
            Phase::Finished
        } else if self.audits >= 1 {
            Phase::Failed
        } else {
            Phase::Digesting
        };
    }

    /// Starts an audit with the digest of every block as written.
    pub fn audit(&mut self, digests: Vec<Digest>) {
        if self.phase != Phase::Digesting || digests.len() != self.blocks.len() {
            return;
        }
        self.audits += 1;
        self.audit = digests
            .into_iter()
            .zip(&self.blocks)
            .map(|(disk, b)| Audit::Unchecked {
                disk,
                by: match b {
                    Block::Done(by) => *by,
                    _ => None,
                },
            })
            .collect();
        self.phase = Phase::Auditing;
    }

    /// A check of `block` by `source` gave `digest`: what to do with its bytes.
    pub fn checked(
        &mut self,
        source: SourceId,
        block: u64,
        digest: Digest,
        now: Instant,
    ) -> Verdict {
        let Some(State::Checking { block: b, .. }) = self.sources.get(source).map(|s| &s.state)
        else {
            return Verdict::Keep;
        };
        if *b != block {
            return Verdict::Keep;
        }
        self.idle_time(source, now);
        self.sources[source].state = State::Idle;
        let (s, e) = self.block_range(block);
        self.sources[source].bytes += e - s;
        let i = block as usize;
        match self.audit[i] {
            Audit::Checking { disk, by, checker } if checker == source => {
                self.audit[i] = if digest == disk {
                    Audit::Settled
                } else {
                    Audit::Disputed {
                        disk,
                        by,
                        other: digest,
                        other_by: source,
                    }
                };
                Verdict::Keep
            }
            Audit::Deciding {
                disk,
                by,
                other,
                other_by,
                checker,
            } if checker == source => {
                self.audit[i] = Audit::Settled;
                if digest == disk {
                    self.drop_source(other_by, "sent bytes two other sources contradict");
                    Verdict::Keep
                } else if digest == other {
                    if let Some(liar) = by {
                        self.drop_source(liar, "sent bytes two other sources contradict");
                    }
                    self.blocks[i] = Block::Done(Some(source));
                    Verdict::Write
                } else {
                    Verdict::Keep
                }
            }
            _ => Verdict::Keep,
        }
    }

    /// What to do next. Call after every event and now and then (on a timer).
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        // Busy sources that went silent lose their blocks; waiting ones come back.
        for id in 0..self.sources.len() {
            match self.sources[id].state {
                State::Busy { last, .. } if now.duration_since(last) >= self.config.stall => {
                    self.failed(id, now, None);
                    out.push(Action::Abort { source: id });
                }
                State::Checking { since, .. } if now.duration_since(since) >= self.config.stall => {
                    self.failed(id, now, None);
                    out.push(Action::Abort { source: id });
                }
                State::Waiting { until } if now >= until => {
                    self.sources[id].state = State::Idle;
                }
                _ => {}
            }
        }
        match self.phase {
            Phase::Fetching => self.plan_fetches(now, &mut out),
            Phase::Auditing => self.plan_checks(now, &mut out),
            Phase::Verifying => {}
            Phase::Digesting => {
                out.push(Action::Digests);
            }
            Phase::Finished => out.push(Action::Finish),
            Phase::Failed => out.push(Action::Fail(
                "the file's SHA-1 does not match, and checking its blocks against other \
                 sources did not find the bytes that are wrong"
                    .to_string(),
            )),
        }
        out
    }

    fn plan_fetches(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.blocks.iter().all(|b| matches!(b, Block::Done(_))) {
            self.phase = Phase::Verifying;
            out.push(Action::Verify);
            return;
        }
        let usable = self
            .sources
            .iter()
            .filter(|s| !matches!(s.state, State::Dropped(_)))
            .count() as u64;
        if usable == 0 {
            out.push(Action::Fail(
                "no source is left to fetch the rest of the file from".to_string(),
            ));
            return;
        }
        // Chunks small enough that every source gets work twice over.
        let chunk = self
            .block_count()
            .div_ceil(2 * usable)
            .clamp(1, self.config.max_chunk_blocks);
        for id in 0..self.sources.len() {
            if self.sources[id].state != State::Idle {
                continue;
            }
            let Some(first) = self.blocks.iter().position(|b| *b == Block::Missing) else {
                break;
            };
            let first = first as u64;
            let mut end = first + 1;
            while end < first + chunk
                && end < self.block_count()
                && self.blocks[end as usize] == Block::Missing
            {
                end += 1;
            }
            out.push(self.assign(id, first, end, now));
        }
        // Nothing left to hand out: an idle source may take half of what a much
        // slower busy one still has to fetch.
        if self.stealing.is_some() || self.blocks.contains(&Block::Missing) {
            return;
        }
        let Some(thief) = (0..self.sources.len()).find(|&i| self.sources[i].state == State::Idle)
        else {
            return;
        };
        let best = self
            .sources
            .iter()
            .filter_map(|s| s.rate(now, self.block))
            .fold(0.0, f64::max);
        let thief_rate = self.sources[thief].rate(now, self.block).unwrap_or(best);
        let mut victim = None;
        for (id, s) in self.sources.iter().enumerate() {
            let State::Busy { next, end, .. } = s.state else {
                continue;
            };
            let left = end - next;
            if left < 2 {
                continue;
            }
            let rate = s.rate(now, self.block).unwrap_or(0.0);
            if thief_rate > 0.0
                && thief_rate >= self.config.steal_factor * rate
                && victim.is_none_or(|(_, l)| left > l)
            {
                victim = Some((id, left));
            }
        }
        if let Some((v, _)) = victim {
            let State::Busy { next, end, .. } = self.sources[v].state else {
                return;
            };
            let at = next + (end - next).div_ceil(2);
            self.stealing = Some((v, thief));
            out.push(Action::Steal {
                victim: v,
                thief,
                at: at * self.block,
            });
        }
    }

    fn plan_checks(&mut self, now: Instant, out: &mut Vec<Action>) {
        for id in 0..self.sources.len() {
            if self.sources[id].state != State::Idle {
                continue;
            }
            let pick = self.audit.iter().position(|a| match *a {
                Audit::Unchecked { by, .. } => by != Some(id),
                Audit::Disputed { by, other_by, .. } => by != Some(id) && other_by != id,
                _ => false,
            });
            let Some(b) = pick else { continue };
            self.audit[b] = match self.audit[b] {
                Audit::Unchecked { disk, by } => Audit::Checking {
                    disk,
                    by,
                    checker: id,
                },
                Audit::Disputed {
                    disk,
                    by,
                    other,
                    other_by,
                } => Audit::Deciding {
                    disk,
                    by,
                    other,
                    other_by,
                    checker: id,
                },
                a => a,
            };
            self.sources[id].state = State::Checking {
                block: b as u64,
                since: now,
            };
            out.push(Action::Check {
                source: id,
                block: b as u64,
            });
        }
        // Blocks nobody can check any more stay as they are.
        let anyone_busy = self
            .sources
            .iter()
            .any(|s| matches!(s.state, State::Checking { .. } | State::Waiting { .. }));
        if !anyone_busy {
            for a in &mut self.audit {
                if matches!(a, Audit::Unchecked { .. } | Audit::Disputed { .. }) {
                    *a = Audit::Settled;
                }
            }
        }
        if self.audit.iter().all(|a| *a == Audit::Settled) {
            self.phase = Phase::Verifying;
            out.push(Action::Verify);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PlanConfig {
        PlanConfig {
            max_chunk_blocks: 4,
            stall: Duration::from_secs(10),
            max_failures: 2,
            retry: Duration::from_secs(1),
            steal_factor: 2.0,
        }
    }

    fn fetches(actions: &[Action]) -> Vec<(SourceId, u64, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Fetch { source, start, end } => Some((*source, *start, *end)),
                _ => None,
            })
            .collect()
    }

    /// Reports every block of a fetch as done.
    fn complete(p: &mut Planner, source: SourceId, start: u64, end: u64, now: Instant) {
        let bs = p.block_size();
        for b in start / bs..end.div_ceil(bs) {
            p.block_done(source, b, now);
        }
    }

    #[test]
    fn blocks_are_bounded_for_any_size() {
        assert_eq!(block_size_for(1000), 64 << 10);
        assert_eq!(block_size_for(64 << 20), 64 << 10);
        assert_eq!(block_size_for((64 << 20) + 1), 1 << 20);
        assert_eq!(block_size_for(64 << 30), 1 << 20);
        for size in [(64u64 << 30) + 1, 1 << 40, 1 << 62, u64::MAX] {
            let b = block_size_for(size);
            assert!(size.div_ceil(b) <= MAX_BLOCKS, "{size}: {b}");
        }
    }

    #[test]
    fn sources_share_the_file_and_it_is_verified() {
        let t = Instant::now();
        let mut p = Planner::new(10 * 100 - 50, 100, &[], cfg());
        let a = p.add_source();
        let b = p.add_source();
        let first = fetches(&p.poll(t));
        // 10 blocks, 2 sources: chunks of ceil(10/4) = 3 blocks.
        assert_eq!(first, [(a, 0, 300), (b, 300, 600)]);
        complete(&mut p, a, 0, 300, t);
        assert_eq!(fetches(&p.poll(t)), [(a, 600, 900)]);
        complete(&mut p, b, 300, 600, t);
        assert_eq!(fetches(&p.poll(t)), [(b, 900, 950)], "the short last block");
        complete(&mut p, a, 600, 900, t);
        complete(&mut p, b, 900, 950, t);
        assert_eq!(p.done_bytes(), 950);
        assert_eq!(p.poll(t), [Action::Verify]);
        assert_eq!(p.poll(t), []);
        p.verified(true);
        assert_eq!(p.poll(t), [Action::Finish]);
    }

    #[test]
    fn resume_fetches_only_the_holes() {
        let t = Instant::now();
        let have = [true, true, false, true, false];
        let mut p = Planner::new(500, 100, &have, cfg());
        let a = p.add_source();
        assert_eq!(p.done_bytes(), 300);
        assert_eq!(fetches(&p.poll(t)), [(a, 200, 300)]);
        complete(&mut p, a, 200, 300, t);
        assert_eq!(fetches(&p.poll(t)), [(a, 400, 500)]);
    }

    #[test]
    fn a_stalled_source_loses_its_chunk_and_fails_out() {
        let t = Instant::now();
        let mut p = Planner::new(400, 100, &[], cfg());
        let a = p.add_source();
        let b = p.add_source();
        assert_eq!(fetches(&p.poll(t)), [(a, 0, 100), (b, 100, 200)]);
        p.block_done(b, 1, t + Duration::from_secs(1));
        // b moves on, a says nothing for the stall time.
        let later = t + Duration::from_secs(10);
        let acts = p.poll(later);
        assert!(acts.contains(&Action::Abort { source: a }));
        assert_eq!(fetches(&acts), [(b, 0, 100)], "a's block goes to b");
        // a is tried again after its back-off.
        let after = later + Duration::from_secs(1);
        assert_eq!(fetches(&p.poll(after)), [(a, 200, 300)]);
        p.failed(a, after, None);
        assert_eq!(p.dropped(a), Some("failed 2 times"));
        assert_eq!(p.live_sources(), 1);
    }

    #[test]
    fn a_slow_source_loses_half_its_range_to_a_fast_one() {
        let t = Instant::now();
        let mut c = cfg();
        c.max_chunk_blocks = 8;
        let mut p = Planner::new(1600, 100, &[], c);
        let slow = p.add_source();
        let fast = p.add_source();
        // 16 blocks / 4 = chunks of 4.
        assert_eq!(fetches(&p.poll(t)), [(slow, 0, 400), (fast, 400, 800)]);
        let mut now = t;
        // fast does a block every 10 ms, slow one block in total.
        for b in 4..8 {
            now += Duration::from_millis(10);
            p.block_done(fast, b, now);
        }
        p.block_done(slow, 0, now);
        assert_eq!(fetches(&p.poll(now)), [(fast, 800, 1200)]);
        for b in 8..12 {
            now += Duration::from_millis(10);
            p.block_done(fast, b, now);
        }
        assert_eq!(fetches(&p.poll(now)), [(fast, 1200, 1600)]);
        for b in 12..16 {
            now += Duration::from_millis(10);
            p.block_done(fast, b, now);
        }
        // Nothing missing: fast (fast) takes half of slow's three blocks left.
        let acts = p.poll(now);
        assert_eq!(
            acts,
            [Action::Steal {
                victim: slow,
                thief: fast,
                at: 300
            }]
        );
        assert_eq!(p.poll(now), [], "one steal at a time");
        // The shell could only cut at 300 (slow had not reached it).
        let next = p.stolen(slow, Some(300), now);
        assert_eq!(
            next,
            Some(Action::Fetch {
                source: fast,
                start: 300,
                end: 400
            })
        );
        p.block_done(fast, 3, now);
        p.block_done(slow, 1, now);
        p.block_done(slow, 2, now);
        assert_eq!(p.poll(now), [Action::Verify]);
        assert!(p.supplied(fast) > p.supplied(slow));
    }

    #[test]
    fn a_steal_the_victim_outran_gives_nothing() {
        let t = Instant::now();
        let mut p = Planner::new(800, 100, &[], cfg());
        let slow = p.add_source();
        let fast = p.add_source();
        p.poll(t);
        let now = t + Duration::from_secs(1);
        complete(&mut p, fast, 200, 400, now);
        p.poll(now);
        complete(&mut p, fast, 400, 600, now);
        p.poll(now);
        complete(&mut p, fast, 600, 800, now);
        let acts = p.poll(now);
        assert!(matches!(acts[..], [Action::Steal { victim, .. }] if victim == slow));
        assert_eq!(p.stolen(slow, None, now), None);
        // Another steal may follow later.
        assert_eq!(p.poll(now).len(), 1);
    }

    /// Runs an audit where `liar` supplied `lied` blocks and every other block is
    /// honest; returns the planner after the audit's checks.
    #[test]
    fn the_liar_is_found_by_a_majority() {
        let t = Instant::now();
        let mut p = Planner::new(600, 100, &[], cfg());
        let srcs: Vec<_> = (0..3).map(|_| p.add_source()).collect();
        let (h1, h2, liar) = (srcs[0], srcs[1], srcs[2]);
        let acts = p.poll(t);
        for (s, a, e) in fetches(&acts) {
            complete(&mut p, s, a, e, t);
        }
        loop {
            let acts = p.poll(t);
            if acts.contains(&Action::Verify) {
                break;
            }
            for (s, a, e) in fetches(&acts) {
                complete(&mut p, s, a, e, t);
            }
        }
        p.verified(false);
        assert_eq!(p.poll(t), [Action::Digests]);
        // The true digest of block b is [b; 20]; the liar's blocks are written wrong.
        let by_liar: Vec<bool> = (0..6)
            .map(|b| p.blocks[b] == Block::Done(Some(liar)))
            .collect();
        assert!(by_liar.iter().any(|x| *x));
        let truth = |b: u64| [b as u8; 20];
        let lie = |b: u64| [b as u8 + 100; 20];
        let disk: Vec<Digest> = (0..6)
            .map(|b| {
                if by_liar[b] {
                    lie(b as u64)
                } else {
                    truth(b as u64)
                }
            })
            .collect();
        p.audit(disk);
        let mut writes = 0;
        for _ in 0..20 {
            let acts = p.poll(t);
            if acts.contains(&Action::Verify) {
                break;
            }
            for a in acts {
                if let Action::Check { source, block } = a {
                    let d = if source == liar {
                        lie(block)
                    } else {
                        truth(block)
                    };
                    if p.checked(source, block, d, t) == Verdict::Write {
                        writes += 1;
                    }
                }
            }
        }
        assert_eq!(writes, by_liar.iter().filter(|x| **x).count());
        assert!(p.dropped(liar).is_some());
        assert!(p.dropped(h1).is_none() && p.dropped(h2).is_none());
        p.verified(true);
        assert_eq!(p.poll(t), [Action::Finish]);
    }

    #[test]
    fn a_hash_that_never_matches_fails() {
        let t = Instant::now();
        let mut p = Planner::new(100, 100, &[], cfg());
        let a = p.add_source();
        assert_eq!(fetches(&p.poll(t)), [(a, 0, 100)]);
        complete(&mut p, a, 0, 100, t);
        assert_eq!(p.poll(t), [Action::Verify]);
        p.verified(false);
        assert_eq!(p.poll(t), [Action::Digests]);
        p.audit(vec![[0; 20]]);
        // One source: nobody else can check its block.
        assert_eq!(p.poll(t), [Action::Verify]);
        p.verified(false);
        assert!(matches!(p.poll(t)[..], [Action::Fail(_)]));
    }

    #[test]
    fn no_sources_left_fails() {
        let t = Instant::now();
        let mut p = Planner::new(100, 100, &[], cfg());
        let a = p.add_source();
        p.poll(t);
        p.drop_source(a, "wrong size");
        assert!(matches!(p.poll(t)[..], [Action::Fail(_)]));
    }
}
