//! The memory accounting's weights (docs/rules.md#memory-cap): what one of
//! each thing held costs. The engine and the reference count the same
//! things ([`Held`]) and weigh them alike.

/// What a rollup holds, counted by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Sessions held: open, waiting to be reported, or done and kept to
    /// recognise replays.
    pub sessions: usize,
    /// Of those, sessions with a row still to send.
    pub live: usize,
    /// Groups held.
    pub groups: usize,
    /// Groups whose rolled-up record gained requests after the rollup that
    /// last reported it.
    pub changed_groups: usize,
}

/// The cost of each thing the memory accounting counts, in any unit the
/// caller's cap is in (bytes of RSS in `tally serve`).
///
/// A held session costs `session`; a group costs `group` (its record, its
/// table slot, and its session buffer's first allocation); every row that
/// may wait in a failed flush's backlog costs `row`: one for each live
/// session, one for each changed group's record, one for each row not yet
/// delivered. So a new session in a new group costs `group + session +
/// row`, a new session in a group already held `session + row`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    /// A session held.
    pub session: usize,
    /// A group held.
    pub group: usize,
    /// A row waiting, or one a held session or changed record may leave.
    pub row: usize,
}

impl Weights {
    /// One unit for each thing: the accounting in abstract units (a live
    /// session two, a done one one, a group one, a row one).
    pub const UNITS: Self = Self {
        session: 1,
        group: 1,
        row: 1,
    };

    /// Bytes of RSS each thing was measured to take (glibc malloc, by
    /// `examples/rss_weights.rs`; BENCHMARKS.md, "The cap full"): what
    /// `tally serve` weighs its cap with. A session: 79 to 96 bytes in
    /// groups of 300 to 1,700 sessions. A row: 176 (the report, 144, and
    /// its slug's copy). A group: what a session in a group of its own
    /// takes beyond a session and its row, at its most: 889 bytes with the
    /// group table just grown (least full; 669 when fullest), so 617,
    /// rounded up. So the costliest shape never takes more than it is
    /// counted at, and sessions sharing groups are counted at about their
    /// RSS (their rows aside, counted while they may yet be left).
    pub const RSS_BYTES: Self = Self {
        session: 96,
        group: 624,
        row: 176,
    };

    /// The weight of what `held` counts.
    pub fn of(&self, held: Held) -> usize {
        let rows = held.live.saturating_add(held.changed_groups);
        self.session
            .saturating_mul(held.sessions)
            .saturating_add(self.group.saturating_mul(held.groups))
            .saturating_add(self.row.saturating_mul(rows))
    }

    /// `n` rows waiting to be delivered.
    pub fn rows(&self, n: usize) -> usize {
        self.row.saturating_mul(n)
    }

    /// A new session in a group already held: itself and the row it may
    /// leave.
    pub fn new_session(&self) -> usize {
        self.session.saturating_add(self.row)
    }

    /// A new session that opens a group of its own: the most one report
    /// can add, and so what a report not yet applied is counted at.
    pub fn new_group(&self) -> usize {
        self.new_session().saturating_add(self.group)
    }
}

impl Default for Weights {
    fn default() -> Self {
        Self::UNITS
    }
}
