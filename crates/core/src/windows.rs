//! Release windows: when a canary may start, when its steps may advance and when it may
//! be promoted, as local times in an IANA time zone ("Mon-Fri 01:00-05:00" in
//! Europe/Berlin), plus freeze dates when none of it happens. Pure: evaluated from the
//! `now` the engine is given; daylight-saving changes are jiff's (local times are read
//! off the zone's rules, and a window start that falls in a gap opens at the first
//! instant after it).

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::spec::{Problems, ReleaseWindows};

/// What a window lets happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// A new revision's canary may start.
    Start,
    /// A passed step may give way to the next one.
    Advance,
    /// The last passed step may give way to promotion.
    Promote,
}

impl Gate {
    pub fn verb(self) -> &'static str {
        match self {
            Gate::Start => "start",
            Gate::Advance => "advance",
            Gate::Promote => "promote",
        }
    }
}

/// One weekly window: on `days`, from `from` to `to` local time; a window whose end is
/// not after its start runs past midnight into the next day.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Monday first.
    days: [bool; 7],
    from: Time,
    /// `None`: until midnight (24:00).
    to: Option<Time>,
    text: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Windows {
    tz: TimeZone,
    zone_name: String,
    start: Vec<Window>,
    advance: Vec<Window>,
    promote: Vec<Window>,
    /// Inclusive local date ranges when nothing starts, advances or is promoted.
    freeze: Vec<(Date, Date)>,
}

/// How far ahead the next opening is looked for: a year and a bit covers any weekly
/// window after any freeze a person writes.
const HORIZON_DAYS: i64 = 400;

fn day_index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

fn parse_day(text: &str) -> Option<usize> {
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    days.iter().position(|d| text.eq_ignore_ascii_case(d))
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if text.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    for part in text.split(',') {
        let bad = || format!("{part:?} is not a day (Mon..Sun), a range (Mon-Fri) or daily");
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (parse_day(a).ok_or_else(bad)?, parse_day(b).ok_or_else(bad)?);
        // A range may wrap past Sunday (Fri-Mon).
        let mut d = a;
        loop {
            if let Some(day) = days.get_mut(d) {
                *day = true;
            }
            if d == b {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(days)
}

fn parse_time(text: &str, end: bool) -> Result<Option<Time>, String> {
    if end && text == "24:00" {
        return Ok(None);
    }
    let bad = || format!("{text:?} is not a time such as 01:30 (HH:MM, 00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    Time::new(h, m, 0, 0).map(Some).map_err(|_| bad())
}

impl Window {
    /// `"Mon-Fri 01:00-05:00"`, `"daily 22:00-06:00"`, `"Sat,Sun"` (all day).
    pub fn parse(text: &str) -> Result<Window, String> {
        let mut parts = text.split_whitespace();
        let days = parse_days(parts.next().ok_or("empty window")?)?;
        let (from, to) = match parts.next() {
            None => (Time::midnight(), None),
            Some(range) => {
                let (a, b) = range
                    .split_once('-')
                    .ok_or_else(|| format!("{range:?} is not a time range such as 01:00-05:00"))?;
                let from = parse_time(a, false)?.unwrap_or(Time::midnight());
                (from, parse_time(b, true)?)
            }
        };
        if parts.next().is_some() {
            return Err("expected days and at most one time range, e.g. \"Mon-Fri 01:00-05:00\"".into());
        }
        if to == Some(from) {
            return Err("the window starts and ends at the same time; for all day, leave the times out".into());
        }
        Ok(Window {
            days,
            from,
            to,
            text: text.to_string(),
        })
    }

    fn contains(&self, local: DateTime) -> bool {
        let (day, t) = (day_index(local.weekday()), local.time());
        let on = |day: usize| self.days.get(day % 7).copied().unwrap_or(false);
        match self.to {
            None => on(day) && t >= self.from,
            Some(to) if to > self.from => on(day) && t >= self.from && t < to,
            // Past midnight: the evening of a listed day, or the morning after one.
            Some(to) => (on(day) && t >= self.from) || (on(day + 6) && t < to),
        }
    }
}

fn parse_freeze(text: &str) -> Result<(Date, Date), String> {
    let bad = || format!("{text:?} is not a date (2026-12-24) or a range of dates (2026-12-20/2027-01-03)");
    let (a, b) = text.split_once('/').unwrap_or((text, text));
    let (a, b): (Date, Date) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if b < a {
        return Err(format!("{text:?} ends before it begins"));
    }
    Ok((a, b))
}

fn parse_list(field: &str, texts: &[String], errors: &mut Problems) -> Vec<Window> {
    texts
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            Window::parse(t)
                .map_err(|e| errors.at(format!("{field}[{i}]"), e.to_string()))
                .ok()
        })
        .collect()
}

impl Windows {
    /// Reads the spec's windows, every problem named by its field under `field`.
    pub fn parse(field: &str, spec: &ReleaseWindows, errors: &mut Problems) -> Option<Windows> {
        let before = errors.len();
        let zone_name = spec.time_zone.clone().unwrap_or_else(|| "UTC".into());
        let tz = TimeZone::get(&zone_name)
            .map_err(|_| {
                errors.at(
                    format!("{field}.timeZone"),
                    format!("{zone_name:?} is not an IANA time zone such as Europe/Berlin or UTC"),
                )
            })
            .ok();
        let windows = Windows {
            tz: tz.unwrap_or(TimeZone::UTC),
            zone_name,
            start: parse_list(&format!("{field}.start"), &spec.start, errors),
            advance: parse_list(&format!("{field}.advance"), &spec.advance, errors),
            promote: parse_list(&format!("{field}.promote"), &spec.promote, errors),
            freeze: spec
                .freeze
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    parse_freeze(t)
                        .map_err(|e| errors.at(format!("{field}.freeze[{i}]"), e.to_string()))
                        .ok()
                })
                .collect(),
        };
        (errors.len() == before).then_some(windows)
    }

    fn list(&self, gate: Gate) -> &[Window] {
        match gate {
            Gate::Start => &self.start,
            Gate::Advance => &self.advance,
            Gate::Promote => &self.promote,
        }
    }

    /// The instant a local time first shows on the clock: for a time skipped by a
    /// daylight-saving jump, the instant of the jump (02:30 on the night clocks go from
    /// 02:00 to 03:00 opens with 03:00).
    fn instant(&self, local: DateTime) -> Option<Timestamp> {
        let ambiguous = self.tz.to_ambiguous_timestamp(local);
        match ambiguous.offset() {
            jiff::tz::AmbiguousOffset::Gap { after, .. } => {
                // Read with the offset after the jump, the time lies before it: the next
                // transition from there is the jump itself.
                let before_jump = after.to_timestamp(local).ok()?;
                self.tz.following(before_jump).next().map(|t| t.timestamp())
            }
            _ => ambiguous.compatible().ok(),
        }
    }

    fn local(&self, t: Timestamp) -> DateTime {
        t.to_zoned(self.tz.clone()).datetime()
    }

    /// May `gate` happen at `t`?
    pub fn open(&self, gate: Gate, t: Timestamp) -> bool {
        let local = self.local(t);
        if self.freeze.iter().any(|(a, b)| (*a..=*b).contains(&local.date())) {
            return false;
        }
        let list = self.list(gate);
        list.is_empty() || list.iter().any(|w| w.contains(local))
    }

    /// The first instant at or after `now` when `gate` may happen, if any within a year.
    pub fn next_open(&self, gate: Gate, now: Timestamp) -> Option<Timestamp> {
        if self.open(gate, now) {
            return Some(now);
        }
        let today = self.local(now).date();
        // An opening is a window's start on some day, or the first midnight after a
        // freeze (a window may already be running then). Days in order: the first day
        // with one has the answer.
        (0..=HORIZON_DAYS)
            .filter_map(|n| today.checked_add(n.days()).ok())
            .find_map(|date| {
                self.list(gate)
                    .iter()
                    .map(|w| w.from)
                    .chain(std::iter::once(Time::midnight()))
                    .filter_map(|time| self.instant(date.to_datetime(time)))
                    .filter(|t| *t > now && self.open(gate, *t))
                    .min()
            })
    }

    /// "Mon-Fri 01:00-05:00 Europe/Berlin", for messages.
    pub fn describe(&self, gate: Gate) -> String {
        let list = self.list(gate);
        let when = if list.is_empty() {
            "any time".to_string()
        } else {
            list.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(", ")
        };
        let freeze = if self.freeze.is_empty() {
            ""
        } else {
            ", not during a freeze"
        };
        format!("{when} {}{freeze}", self.zone_name)
    }

    /// A local time for messages: "Tue 2026-12-01 01:00 Europe/Berlin".
    pub fn show(&self, t: Timestamp) -> String {
        let local = self.local(t);
        format!("{} {}", local.strftime("%a %Y-%m-%d %H:%M"), self.zone_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(zone: &str, start: &[&str], freeze: &[&str]) -> Windows {
        let spec = ReleaseWindows {
            time_zone: Some(zone.into()),
            start: start.iter().map(|s| s.to_string()).collect(),
            freeze: freeze.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut errors = Problems::default();
        let w = Windows::parse("releaseWindows", &spec, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        w.unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_weekday_night_window_in_berlin() {
        let w = windows("Europe/Berlin", &["Mon-Fri 01:00-05:00"], &[]);
        // Tuesday 2026-12-01 01:30 in Berlin is 00:30 UTC (CET, +01:00).
        assert!(w.open(Gate::Start, at("2026-12-01T00:30:00Z")));
        assert!(!w.open(Gate::Start, at("2026-12-01T04:00:00Z")));
        // Saturday night: closed; the next opening is Monday 01:00 local.
        let saturday = at("2026-12-05T01:00:00Z");
        assert!(!w.open(Gate::Start, saturday));
        assert_eq!(w.next_open(Gate::Start, saturday), Some(at("2026-12-07T00:00:00Z")));
        assert_eq!(w.show(at("2026-12-07T00:00:00Z")), "Mon 2026-12-07 01:00 Europe/Berlin");
        // Gates without windows are always open.
        assert!(w.open(Gate::Promote, saturday));
    }

    #[test]
    fn windows_follow_daylight_saving_time() {
        let w = windows("Europe/Berlin", &["daily 01:00-05:00"], &[]);
        // Summer (CEST, +02:00): 01:00 local is 23:00 UTC the day before.
        assert_eq!(
            w.next_open(Gate::Start, at("2026-07-01T12:00:00Z")),
            Some(at("2026-07-01T23:00:00Z"))
        );
        // The night of the change to winter time (2026-10-25, 03:00 CEST -> 02:00 CET):
        // the window runs 01:00 CEST to 05:00 CET, five hours of real time.
        let opens = w.next_open(Gate::Start, at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(opens, at("2026-10-24T23:00:00Z"));
        assert!(w.open(Gate::Start, at("2026-10-25T03:59:00Z")));
        assert!(!w.open(Gate::Start, at("2026-10-25T04:00:00Z")));
        // Spring forward (2027-03-28, 02:00 CET -> 03:00 CEST): a window starting in the
        // gap opens at the first instant after it.
        let gap = windows("Europe/Berlin", &["daily 02:30-04:00"], &[]);
        assert_eq!(
            gap.next_open(Gate::Start, at("2027-03-27T12:00:00Z")),
            Some(at("2027-03-28T01:00:00Z")),
            "03:00 CEST, the end of the gap"
        );
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts() {
        let w = windows("UTC", &["Fri 22:00-06:00"], &[]);
        assert!(w.open(Gate::Start, at("2026-12-04T23:00:00Z")), "Friday night");
        assert!(w.open(Gate::Start, at("2026-12-05T05:59:00Z")), "Saturday morning");
        assert!(!w.open(Gate::Start, at("2026-12-05T06:00:00Z")));
        assert!(!w.open(Gate::Start, at("2026-12-05T23:00:00Z")), "Saturday night");
        assert!(!w.open(Gate::Start, at("2026-12-04T05:00:00Z")), "Friday morning");
    }

    #[test]
    fn freezes_close_every_gate_and_the_next_opening_is_after_them() {
        let w = windows("UTC", &[], &["2026-12-20/2027-01-03"]);
        assert!(!w.open(Gate::Start, at("2026-12-24T12:00:00Z")));
        assert_eq!(
            w.next_open(Gate::Start, at("2026-12-24T12:00:00Z")),
            Some(at("2027-01-04T00:00:00Z"))
        );
        assert!(w.open(Gate::Start, at("2026-12-19T23:59:00Z")));
    }

    #[test]
    fn bad_windows_name_their_field() {
        let spec = ReleaseWindows {
            time_zone: Some("Mars/Olympus".into()),
            start: vec!["Mon-Fri 1:00-05:00".into(), "Funday".into()],
            promote: vec!["daily 05:00-05:00".into()],
            freeze: vec!["2027-01-03/2026-12-20".into()],
            ..Default::default()
        };
        let mut errors = Problems::default();
        assert!(Windows::parse("releaseWindows", &spec, &mut errors).is_none());
        let shown: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.problem)).collect();
        assert_eq!(
            shown,
            [
                "releaseWindows.timeZone: \"Mars/Olympus\" is not an IANA time zone such as Europe/Berlin or UTC",
                "releaseWindows.start[0]: \"1:00\" is not a time such as 01:30 (HH:MM, 00:00 to 24:00)",
                "releaseWindows.start[1]: \"Funday\" is not a day (Mon..Sun), a range (Mon-Fri) or daily",
                "releaseWindows.promote[0]: the window starts and ends at the same time; for all day, leave the times out",
                "releaseWindows.freeze[0]: \"2027-01-03/2026-12-20\" ends before it begins",
            ]
        );
    }
}
