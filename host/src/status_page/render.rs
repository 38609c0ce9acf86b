//! The status page as HTML: counters, the daemons grouped by machine, the
//! users, and throughput as an inline SVG chart. Self-contained (inline CSS
//! and script, no external loads); every string a peer or the owner chose
//! is escaped. `page.js` redraws the same elements from `/status.json`.

use crate::snapshot::{DaemonStatus, Snapshot};
use std::fmt::Write as _;

pub const SCRIPT: &str = include_str!("page.js");
pub const STYLE: &str = include_str!("page.css");

/// Text made safe inside HTML elements and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// One row of the daemons table: the connections of one `hako daemon`
/// (same name, same address) as its jobs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub ip: String,
    pub volunteer: Option<String>,
    pub jobs: u64,
    pub busy: u64,
    pub tasks_done: u64,
    pub failures: u64,
    pub disagreements: u64,
    pub connected_s: u64,
}

/// The IP of `ip:port` (`[v6]:port` too).
fn ip_of(address: &str) -> &str {
    let ip = address.rsplit_once(':').map_or(address, |(ip, _)| ip);
    ip.trim_start_matches('[').trim_end_matches(']')
}

/// Daemon connections grouped by (name, IP), in order of first connection.
pub fn machines(daemons: &[DaemonStatus]) -> Vec<Machine> {
    let mut out: Vec<Machine> = Vec::new();
    for d in daemons {
        let ip = ip_of(&d.address);
        let i = match out.iter().position(|m| m.name == d.name && m.ip == ip) {
            Some(i) => i,
            None => {
                out.push(Machine {
                    name: d.name.clone(),
                    ip: ip.to_string(),
                    volunteer: d.volunteer.clone(),
                    ..Machine::default()
                });
                out.len() - 1
            }
        };
        let m = &mut out[i];
        m.jobs += 1;
        m.busy += u64::from(d.busy);
        m.tasks_done += d.tasks_done;
        m.failures += d.failures;
        m.disagreements += d.disagreements;
        m.connected_s = m.connected_s.max(d.connected_s);
    }
    out
}

/// `3d 4h`, `4h 5m`, `5m 12s`, `12s`.
pub fn duration(s: u64) -> String {
    let (d, h, m) = (s / 86400, s / 3600 % 24, s / 60 % 60);
    match (d, h, m) {
        (1.., ..) => format!("{d}d {h}h"),
        (0, 1.., _) => format!("{h}h {m}m"),
        (0, 0, 1..) => format!("{m}m {}s", s % 60),
        _ => format!("{s}s"),
    }
}

const CHART_W: u64 = 900;
const CHART_H: u64 = 150;
const CHART_LEFT: u64 = 44;
const CHART_BOTTOM: u64 = 20;

/// Tasks finished per interval as bars, oldest left; `page.js` draws the
/// same with the same constants.
pub fn chart(throughput: &[u64], bucket_s: u64) -> String {
    let mut svg = String::new();
    let plot_w = CHART_W - CHART_LEFT;
    let plot_h = CHART_H - CHART_BOTTOM - 8;
    let base = CHART_H - CHART_BOTTOM;
    // Labels sit on this baseline, their descenders inside the box.
    let label_y = CHART_H - 4;
    let _ = write!(
        svg,
        r#"<svg id="chart" viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" role="img" aria-label="tasks finished over time">"#
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{CHART_LEFT}" y1="{base}" x2="{CHART_W}" y2="{base}"/>"#
    );
    let peak = throughput.iter().copied().max().unwrap_or(0);
    let total: u64 = throughput.iter().sum();
    let n = throughput.len() as u64;
    if n == 0 || peak == 0 {
        let _ = write!(
            svg,
            r#"<text class="empty" x="{}" y="{}">no tasks finished in this window yet</text>"#,
            CHART_LEFT + plot_w / 2,
            base / 2
        );
    } else {
        let slot = plot_w as f64 / n as f64;
        for (i, &v) in throughput.iter().enumerate() {
            let h = v as f64 / peak as f64 * plot_h as f64;
            let _ = write!(
                svg,
                r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{v}</title></rect>"#,
                CHART_LEFT as f64 + i as f64 * slot + 1.0,
                base as f64 - h,
                (slot - 2.0).max(1.0),
                h
            );
        }
        let _ = write!(
            svg,
            r#"<text class="tick" x="{}" y="16" text-anchor="end">{peak}</text>"#,
            CHART_LEFT - 6
        );
    }
    let _ = write!(
        svg,
        r#"<text class="tick" x="{}" y="{base}" text-anchor="end">0</text>"#,
        CHART_LEFT - 6
    );
    let secs = n * bucket_s;
    let window = if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    };
    let _ = write!(
        svg,
        r#"<text class="tick" x="{CHART_LEFT}" y="{label_y}">{window} ago</text><text class="tick" x="{CHART_W}" y="{label_y}" text-anchor="end">now</text>"#
    );
    let _ = write!(
        svg,
        r#"<text id="chart-caption" class="caption" x="{}" y="{label_y}" text-anchor="middle">{total} tasks, at most {peak} per {bucket_s} s</text></svg>"#,
        CHART_LEFT + plot_w / 2
    );
    svg
}

fn daemon_rows(s: &Snapshot) -> String {
    let mut rows = String::new();
    let ms = machines(&s.daemons);
    if ms.is_empty() {
        rows.push_str(r#"<tr><td class="none" colspan="9">no daemons connected</td></tr>"#);
    }
    for m in ms {
        let volunteer = match &m.volunteer {
            Some(v) => escape(v),
            None => r#"<span class="muted">shared token</span>"#.to_string(),
        };
        let _ = write!(
            rows,
            "<tr><td class=\"name\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td>{volunteer}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(&m.name),
            m.jobs,
            m.busy,
            m.tasks_done,
            m.failures,
            m.disagreements,
            escape(&m.ip),
            duration(m.connected_s)
        );
    }
    rows
}

fn user_rows(s: &Snapshot) -> String {
    let mut rows = String::new();
    if s.users.is_empty() {
        rows.push_str(r#"<tr><td class="none" colspan="6">no users yet</td></tr>"#);
    }
    for u in &s.users {
        let _ = write!(
            rows,
            "<tr><td class=\"name\">{}</td><td class=\"num\">{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&u.name),
            u.weight,
            if u.connected { "yes" } else { "no" },
            u.queued,
            u.running,
            u.done
        );
    }
    rows
}

/// The whole page for `s`, readable without its script.
pub fn page(s: &Snapshot) -> String {
    let machines = machines(&s.daemons).len();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hako host status</title>
<style>{STYLE}</style></head>
<body data-live="0">
<header><h1>hako host</h1><p class="muted">up <span id="uptime">{uptime}</span> &middot; <span id="updated" data-at="{at}">as served</span> &middot; <span id="live">static (refreshes every 2 s with JavaScript)</span></p></header>
<section class="cards">
<div class="card"><div class="big" id="c-machines">{machines}</div><div class="label">daemons</div></div>
<div class="card"><div class="big" id="c-jobs">{jobs}</div><div class="label">jobs</div></div>
<div class="card"><div class="big" id="c-queued">{queued}</div><div class="label">queued</div></div>
<div class="card"><div class="big" id="c-running">{running}</div><div class="label">running</div></div>
<div class="card"><div class="big" id="c-completed">{completed}</div><div class="label">completed</div></div>
</section>
<section><h2>Throughput</h2><div id="chart-box">{chart}</div></section>
<section><h2>Daemons</h2><table>
<thead><tr><th>name</th><th>jobs</th><th>busy</th><th>volunteer</th><th>tasks done</th><th>failures</th><th>disagreements</th><th>address</th><th>connected</th></tr></thead>
<tbody id="daemons">{daemons}</tbody></table></section>
<section><h2>Users</h2><table>
<thead><tr><th>user</th><th>weight</th><th>connected</th><th>queued</th><th>running</th><th>done</th></tr></thead>
<tbody id="users">{users}</tbody></table></section>
<script>{SCRIPT}</script>
</body></html>
"#,
        uptime = duration(s.uptime_s),
        at = s.at_unix_ms,
        jobs = s.daemons.len(),
        queued = s.queued,
        running = s.running,
        completed = s.completed,
        chart = chart(&s.throughput, s.throughput_bucket_s),
        daemons = daemon_rows(s),
        users = user_rows(s),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::UserStatus;

    fn daemon(id: u64, name: &str, address: &str, done: u64, busy: bool) -> DaemonStatus {
        DaemonStatus {
            id,
            name: name.into(),
            address: address.into(),
            tasks_done: done,
            busy,
            connected_s: id,
            ..DaemonStatus::default()
        }
    }

    #[test]
    fn peer_strings_are_escaped() {
        assert_eq!(
            escape(r#"<script>alert("1")</script>&'"#),
            "&lt;script&gt;alert(&quot;1&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(escape("a\u{1b}[2Jb"), "a\u{fffd}[2Jb");
        let evil = "<script>alert(1)</script>";
        let s = Snapshot {
            daemons: vec![DaemonStatus {
                volunteer: Some("<img src=x onerror=alert(2)>".into()),
                ..daemon(1, evil, "127.0.0.1:5", 0, false)
            }],
            users: vec![UserStatus {
                name: "</td><b>bob".into(),
                ..UserStatus::default()
            }],
            ..Snapshot::default()
        };
        let html = page(&s);
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains(evil));
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>bob"));
        // The only script is our own.
        assert_eq!(html.matches("<script>").count(), 1);
    }

    #[test]
    fn jobs_of_one_daemon_are_one_row() {
        let ds = vec![
            daemon(1, "a", "10.0.0.1:1000", 2, true),
            daemon(2, "b", "10.0.0.1:1001", 1, false),
            daemon(3, "a", "10.0.0.1:1002", 3, false),
            daemon(4, "a", "[2001:db8::1]:1003", 5, true),
        ];
        let ms = machines(&ds);
        assert_eq!(ms.len(), 3);
        assert_eq!(
            (
                ms[0].name.as_str(),
                ms[0].ip.as_str(),
                ms[0].jobs,
                ms[0].busy,
                ms[0].tasks_done
            ),
            ("a", "10.0.0.1", 2, 1, 5)
        );
        assert_eq!(ms[0].connected_s, 3);
        assert_eq!((ms[2].ip.as_str(), ms[2].jobs), ("2001:db8::1", 1));
    }

    #[test]
    fn the_page_shows_empty_tables_and_a_chart() {
        let html = page(&Snapshot::default());
        assert!(html.contains("no daemons connected") && html.contains("no users yet"));
        assert!(html.contains("no tasks finished"));
        let c = chart(&[0, 2, 4], 10);
        assert_eq!(c.matches("<rect").count(), 3);
        assert!(c.contains("6 tasks, at most 4 per 10 s"), "{c}");
        assert!(c.contains("30 s ago"), "{c}");
        assert!(chart(&[1; 60], 10).contains("10 min ago"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(312), "5m 12s");
        assert_eq!(duration(3 * 3600 + 60 * 7 + 1), "3h 7m");
        assert_eq!(duration(2 * 86400 + 3600), "2d 1h");
        assert_eq!(duration(600), "10m 0s");
    }
}
