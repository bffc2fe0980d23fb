//! The fleet day: one UTC day over all apps, per active user, stored as
//! three aligned columns (entry k of each is the k-th user by ordinal):
//!
//! - `users`: (ordinal, 96-bit activity), what active users read;
//! - `totals`: the user's distinct minutes, sessions and requests of the
//!   whole day, what user activity reads for a day its range covers whole;
//! - `detail`: what a cut of the day at any quarter hour needs, read only
//!   for the (at most two) days a range cuts: the user's distinct minutes in
//!   each quarter hour of its activity mask, one 4-bit count each (a quarter
//!   holds 15 minutes), then for each hour whose first quarter is in the
//!   mask (every hour in which a session of theirs started is) the
//!   sessions and requests that started in it, as LEB128 varints. Quarters
//!   and hours outside the mask are zero and take no bytes.

use std::collections::BTreeMap;

use integer_encoding::VarInt;

use super::{HOURS_PER_DAY, QUARTERS_PER_DAY, UsersRef, activity, encode_users, quarter_counts, u64_at};
use crate::usage::minutes::HourUsage;

/// Bytes of one user's day totals: minutes `u32`, sessions and requests `u64`.
const TOTAL_BYTES: usize = 20;

/// One user's day over all apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDay {
    /// The user's ordinal.
    pub ordinal: u32,
    /// Activity over all apps.
    pub active: u128,
    /// Distinct minutes covered by any app over the day.
    pub minutes: u64,
    /// Sessions that started in the day.
    pub sessions: u64,
    /// Their requests.
    pub requests: u64,
    /// The same figures per quarter hour and start hour.
    pub detail: DayDetail,
}

/// One user's day over all apps, as finely as a quarter-hour cut needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayDetail {
    /// Distinct minutes over all apps in each quarter hour (0 to 15).
    pub minutes: [u8; QUARTERS_PER_DAY],
    /// Sessions that started in each hour.
    pub sessions: [u64; HOURS_PER_DAY],
    /// Their requests.
    pub requests: [u64; HOURS_PER_DAY],
}

impl Default for DayDetail {
    fn default() -> Self {
        Self {
            minutes: [0; QUARTERS_PER_DAY],
            sessions: [0; HOURS_PER_DAY],
            requests: [0; HOURS_PER_DAY],
        }
    }
}

impl DayDetail {
    /// (minutes, sessions, requests) of the quarters in `quarters`, sessions
    /// and requests of the hours whose first quarter is in it.
    pub fn within(&self, quarters: u128) -> (u64, u64, u64) {
        let (mut minutes, mut sessions, mut requests) = (0u64, 0u64, 0u64);
        for q in set_bits(quarters) {
            minutes += u64::from(self.minutes[q]);
            if q % 4 == 0 {
                sessions = sessions.saturating_add(self.sessions[q / 4]);
                requests = requests.saturating_add(self.requests[q / 4]);
            }
        }
        (minutes, sessions, requests)
    }
}

/// The set bits of a quarter mask, ascending.
fn set_bits(mut mask: u128) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let q = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            q
        })
    })
    .filter(|&q| q < QUARTERS_PER_DAY)
}

/// The hours whose first quarter is in `active`.
fn session_hours(active: u128) -> impl Iterator<Item = usize> {
    (0..HOURS_PER_DAY).filter(move |h| (active >> (4 * h)) & 1 != 0)
}

/// One UTC day over all apps: every active user's day, by ordinal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetDay {
    /// The users with any usage in the day.
    pub users: Vec<UserDay>,
}

impl FleetDay {
    /// From the day's hourly rows of every app: (ordinal, hour of the day, usage).
    pub fn build(rows: impl IntoIterator<Item = (u32, usize, HourUsage)>) -> Self {
        // Minutes of one user and hour OR'ed over apps first: a minute counts once.
        let mut hours: BTreeMap<(u32, usize), HourUsage> = BTreeMap::new();
        for (user, h, usage) in rows {
            let merged = hours.entry((user, h)).or_default();
            merged.minutes |= usage.minutes;
            if usage.sessions > 0 {
                merged.sessions = merged.sessions.saturating_add(usage.sessions);
                merged.requests = merged.requests.saturating_add(usage.requests);
            }
        }
        let mut users: Vec<UserDay> = Vec::new();
        for ((ordinal, h), usage) in hours {
            let a = activity(h, &usage);
            if a == 0 {
                continue;
            }
            if users.last().map(|u| u.ordinal) != Some(ordinal) {
                users.push(UserDay {
                    ordinal,
                    active: 0,
                    minutes: 0,
                    sessions: 0,
                    requests: 0,
                    detail: DayDetail::default(),
                });
            }
            let u = users.last_mut().expect("pushed above");
            u.active |= a;
            u.minutes += u64::from(usage.minutes.count_ones());
            u.sessions = u.sessions.saturating_add(usage.sessions);
            u.requests = u.requests.saturating_add(usage.requests);
            for (q, n) in quarter_counts(usage.minutes).into_iter().enumerate() {
                u.detail.minutes[4 * h + q] = n as u8;
            }
            u.detail.sessions[h] = usage.sessions;
            u.detail.requests[h] = usage.requests;
        }
        Self { users }
    }

    /// The activity entries, the totals and the detail, as stored.
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut totals = Vec::with_capacity(self.users.len() * TOTAL_BYTES);
        let mut detail = Vec::new();
        for u in &self.users {
            totals.extend_from_slice(&(u.minutes.min(u64::from(u32::MAX)) as u32).to_le_bytes());
            totals.extend_from_slice(&u.sessions.to_le_bytes());
            totals.extend_from_slice(&u.requests.to_le_bytes());
            encode_detail(&mut detail, u.active, &u.detail);
        }
        (
            encode_users(self.users.iter().map(|u| (u.ordinal, u.active))),
            totals,
            detail,
        )
    }

    /// Reads what [`FleetDay::encode`] wrote.
    pub fn decode(users: &[u8], totals: &[u8], detail: &[u8]) -> Result<Self, String> {
        let users = UsersRef::new(users)?;
        let totals = TotalsRef::new(users, totals)?;
        let details = DetailRef::new(users, detail)
            .iter()
            .collect::<Result<Vec<_>, String>>()?;
        let users = totals
            .iter()
            .zip(details)
            .map(
                |((ordinal, minutes, sessions, requests), (_, active, detail))| UserDay {
                    ordinal,
                    active,
                    minutes,
                    sessions,
                    requests,
                    detail,
                },
            )
            .collect();
        Ok(Self { users })
    }
}

fn encode_detail(out: &mut Vec<u8>, active: u128, d: &DayDetail) {
    let quarters: Vec<u8> = set_bits(active).map(|q| d.minutes[q]).collect();
    out.extend(
        quarters
            .chunks(2)
            .map(|p| p[0] | p.get(1).map_or(0, |hi| hi << 4)),
    );
    for h in session_hours(active) {
        let mut buf = [0u8; 10];
        for v in [d.sessions[h], d.requests[h]] {
            let n = v.encode_var(&mut buf);
            out.extend_from_slice(&buf[..n]);
        }
    }
}

/// Stored day totals beside their users, read in place.
#[derive(Debug, Clone, Copy)]
pub struct TotalsRef<'a> {
    users: UsersRef<'a>,
    totals: &'a [u8],
}

impl<'a> TotalsRef<'a> {
    /// Checks that there are one user's totals per entry of `users`.
    pub fn new(users: UsersRef<'a>, totals: &'a [u8]) -> Result<Self, String> {
        if totals.len() != users.len() * TOTAL_BYTES {
            return Err(format!(
                "a fleet day of {} users has {} bytes of totals, not {}",
                users.len(),
                totals.len(),
                users.len() * TOTAL_BYTES
            ));
        }
        Ok(Self { users, totals })
    }

    /// Each (ordinal, minutes, sessions, requests), by ordinal.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64, u64, u64)> + 'a {
        self.users
            .iter()
            .zip(self.totals.chunks_exact(TOTAL_BYTES))
            .map(|((ordinal, _), t)| {
                let mut m = [0; 4];
                m.copy_from_slice(&t[..4]);
                (
                    ordinal,
                    u64::from(u32::from_le_bytes(m)),
                    u64_at(&t[4..], 0),
                    u64_at(&t[4..], 1),
                )
            })
    }
}

/// A stored day's detail beside its users, read in place: its entries have
/// no fixed size, so it is checked as it is read.
#[derive(Debug, Clone, Copy)]
pub struct DetailRef<'a> {
    users: UsersRef<'a>,
    detail: &'a [u8],
}

impl<'a> DetailRef<'a> {
    /// The detail of the users of `users`, in their order.
    pub fn new(users: UsersRef<'a>, detail: &'a [u8]) -> Self {
        Self { users, detail }
    }

    /// Each (ordinal, activity, detail), by ordinal; an error once the
    /// bytes do not fit the users (and nothing after it).
    pub fn iter(&self) -> impl Iterator<Item = Result<(u32, u128, DayDetail), String>> + 'a {
        let mut rest = self.detail;
        let mut users = self.users.iter();
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed {
                return None;
            }
            let Some((ordinal, active)) = users.next() else {
                failed = true;
                return (!rest.is_empty())
                    .then(|| Err(format!("{} bytes of detail after the last user", rest.len())));
            };
            let entry = decode_detail(&mut rest, active).map(|d| (ordinal, active, d));
            failed = entry.is_err();
            Some(entry.map_err(|e| format!("the detail of user ordinal {ordinal}: {e}")))
        })
    }
}

fn decode_detail(rest: &mut &[u8], active: u128) -> Result<DayDetail, String> {
    let mut d = DayDetail::default();
    let quarters: Vec<usize> = set_bits(active).collect();
    let bytes = quarters.len().div_ceil(2);
    if rest.len() < bytes {
        return Err(format!("{bytes} bytes of quarter minutes, {} left", rest.len()));
    }
    for (k, &q) in quarters.iter().enumerate() {
        d.minutes[q] = (rest[k / 2] >> (4 * (k % 2))) & 0xf;
    }
    *rest = &rest[bytes..];
    for h in session_hours(active) {
        for out in [&mut d.sessions[h], &mut d.requests[h]] {
            let (v, n) = u64::decode_var(rest).ok_or_else(|| format!("hour {h}: a varint cut short"))?;
            *out = v;
            *rest = &rest[n..];
        }
    }
    Ok(d)
}
