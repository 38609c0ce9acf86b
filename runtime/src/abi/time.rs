//! Clocks and calendar time. The guest's zone comes from its own `TZ` and R's
//! zoneinfo files; the libc fallbacks here answer in UTC, so nothing of the
//! host's zone leaks in.

use super::mem;
use crate::errno::{EINVAL, SUCCESS};
use crate::store::StoreData;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmtime::Result;
use wasmtime::{Caller, Linker};

const WASI: &str = "wasi_snapshot_preview1";

/// Monotonic time in ns since an arbitrary process-wide origin (never 0).
fn monotonic_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    1_000_000_000 + origin.elapsed().as_nanos() as u64
}

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn add_to_linker(l: &mut Linker<StoreData>) -> Result<()> {
    l.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Caller<'_, StoreData>, id: u32, _prec: i64, out: u32| -> i32 {
            let ns = match id {
                0 => realtime_ns(),
                1..=3 => monotonic_ns(),
                _ => return EINVAL.0,
            };
            let (m, _) = mem::split(&mut c);
            mem::write_u64(m, out, ns).map_or_else(|e| e.0, |_| SUCCESS)
        },
    )?;
    l.func_wrap(
        WASI,
        "clock_res_get",
        |mut c: Caller<'_, StoreData>, id: u32, out: u32| -> i32 {
            if id > 3 {
                return EINVAL.0;
            }
            let (m, _) = mem::split(&mut c);
            mem::write_u64(m, out, 1000).map_or_else(|e| e.0, |_| SUCCESS)
        },
    )?;
    l.func_wrap("env", "emscripten_date_now", || -> f64 {
        realtime_ns() as f64 / 1e6
    })?;
    l.func_wrap("env", "emscripten_get_now", || -> f64 {
        monotonic_ns() as f64 / 1e6
    })?;
    l.func_wrap(
        "env",
        "_tzset_js",
        |mut c: Caller<'_, StoreData>,
         timezone: u32,
         daylight: u32,
         std_name: u32,
         dst_name: u32| {
            let (m, _) = mem::split(&mut c);
            let _ = mem::write_i32(m, timezone, 0);
            let _ = mem::write_i32(m, daylight, 0);
            let _ = mem::write_bytes(m, std_name, b"UTC\0");
            let _ = mem::write_bytes(m, dst_name, b"UTC\0");
        },
    )?;
    l.func_wrap(
        "env",
        "_localtime_js",
        |mut c: Caller<'_, StoreData>, t: i64, tm: u32| {
            let (m, _) = mem::split(&mut c);
            let _ = write_tm(m, tm, &Tm::from_unix(t));
        },
    )?;
    l.func_wrap(
        "env",
        "_gmtime_js",
        |mut c: Caller<'_, StoreData>, t: i64, tm: u32| {
            let (m, _) = mem::split(&mut c);
            let _ = write_tm(m, tm, &Tm::from_unix(t));
        },
    )?;
    l.func_wrap("env", "_mktime_js", normalise_tm)?;
    l.func_wrap("env", "_timegm_js", normalise_tm)?;
    Ok(())
}

/// `mktime`/`timegm` in UTC: seconds since the epoch of a (possibly
/// denormalised) broken-down time, which is written back normalised.
fn normalise_tm(mut c: Caller<'_, StoreData>, tm: u32) -> i64 {
    let (m, _) = mem::split(&mut c);
    let Ok(t) = read_tm(m, tm) else { return -1 };
    let secs = t.to_unix();
    let _ = write_tm(m, tm, &Tm::from_unix(secs));
    secs
}

/// C's `struct tm` as the guest lays it out (i32 fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tm {
    pub sec: i32,
    pub min: i32,
    pub hour: i32,
    pub mday: i32,
    pub mon: i32,
    pub year: i32,
    pub wday: i32,
    pub yday: i32,
}

impl Tm {
    pub fn from_unix(t: i64) -> Tm {
        let days = t.div_euclid(86400);
        let rem = t.rem_euclid(86400);
        let (y, mo, d) = civil_from_days(days);
        let yday = days - days_from_civil(y, 1, 1);
        Tm {
            sec: (rem % 60) as i32,
            min: ((rem / 60) % 60) as i32,
            hour: (rem / 3600) as i32,
            mday: d as i32,
            mon: mo as i32 - 1,
            year: (y - 1900) as i32,
            wday: (days + 4).rem_euclid(7) as i32,
            yday: yday as i32,
        }
    }

    pub fn to_unix(&self) -> i64 {
        let mon = i64::from(self.mon);
        let year = 1900 + i64::from(self.year) + mon.div_euclid(12);
        let days = days_from_civil(year, mon.rem_euclid(12) + 1, 1) + i64::from(self.mday) - 1;
        days * 86400 + i64::from(self.hour) * 3600 + i64::from(self.min) * 60 + i64::from(self.sec)
    }
}

fn read_tm(m: &[u8], p: u32) -> Result<Tm, crate::errno::Errno> {
    let f = |i: u32| mem::read_i32(m, p.wrapping_add(4 * i));
    Ok(Tm {
        sec: f(0)?,
        min: f(1)?,
        hour: f(2)?,
        mday: f(3)?,
        mon: f(4)?,
        year: f(5)?,
        wday: f(6)?,
        yday: f(7)?,
    })
}

fn write_tm(m: &mut [u8], p: u32, t: &Tm) -> Result<(), crate::errno::Errno> {
    mem::range(m, p, 40)?;
    let fields = [
        t.sec, t.min, t.hour, t.mday, t.mon, t.year, t.wday, t.yday, 0, 0,
    ];
    for (i, v) in fields.iter().enumerate() {
        mem::write_i32(m, p + 4 * i as u32, *v)?;
    }
    Ok(())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        // 2024-03-31T01:30:00Z, a Sunday, day 90 of a leap year.
        let t = 1_711_848_600;
        let tm = Tm::from_unix(t);
        assert_eq!(
            (tm.year, tm.mon, tm.mday, tm.hour, tm.min),
            (124, 2, 31, 1, 30)
        );
        assert_eq!((tm.wday, tm.yday), (0, 90));
        assert_eq!(tm.to_unix(), t);
        assert_eq!(Tm::from_unix(-1).year, 69);
        // Denormalised month 12 of 2023 is January 2024.
        let d = Tm {
            mon: 12,
            year: 123,
            mday: 1,
            ..Tm::from_unix(0)
        };
        assert_eq!(Tm::from_unix(d.to_unix()).year, 124);
    }
}
