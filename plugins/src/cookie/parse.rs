//! Byte-level cookie parsing: `Cookie` request fields, `Set-Cookie` response fields and cookie
//! dates (RFC 6265 §5.1.1). No allocation; any bytes accepted.

/// Optional whitespace around cookie pairs and attributes.
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A value without its surrounding double quotes (`"abc"` → `abc`).
fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    }
}

/// Split `name=value` (both trimmed); `None` without `=`.
fn pair(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = s.iter().position(|&c| c == b'=')?;
    Some((trim(&s[..eq]), trim(&s[eq + 1..])))
}

/// The value of the first cookie called `name` in one `Cookie` field, quotes stripped.
/// Pairs without `=` are skipped; names are case-sensitive.
pub(crate) fn find_in_field<'a>(field: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    field.split(|&c| c == b';').find_map(|item| {
        let (n, v) = pair(item)?;
        (n == name).then(|| unquote(v))
    })
}

/// What one `Set-Cookie` field does to the cookie called `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetCookie<'a> {
    /// Sets it to this (non-empty, unquoted) value.
    Set(&'a [u8]),
    /// Deletes it: empty value, `Max-Age` ≤ 0, or `Expires` not after `now`.
    Delete,
}

/// Read one `Set-Cookie` field; `None` when it is about another cookie (or not a cookie).
/// `Max-Age` takes precedence over `Expires`; for each, the last valid one counts; an
/// unparsable one is ignored (RFC 6265 §5.2).
pub(crate) fn set_cookie<'a>(field: &'a [u8], name: &[u8], now: u64) -> Option<SetCookie<'a>> {
    let mut items = field.split(|&c| c == b';');
    let (n, v) = pair(items.next()?)?;
    if n != name {
        return None;
    }
    let value = unquote(v);
    let (mut max_age_deletes, mut expires_deletes) = (None, None);
    for attr in items {
        let (key, val) = pair(attr).unwrap_or((trim(attr), b""));
        if key.eq_ignore_ascii_case(b"max-age") {
            if let Some(deletes) = max_age_deletes_cookie(val) {
                max_age_deletes = Some(deletes);
            }
        } else if key.eq_ignore_ascii_case(b"expires") {
            if let Some(at) = parse_date(val) {
                expires_deletes = Some(at <= now);
            }
        }
    }
    let deletes = max_age_deletes.or(expires_deletes).unwrap_or(false);
    Some(if deletes || value.is_empty() {
        SetCookie::Delete
    } else {
        SetCookie::Set(value)
    })
}

/// `Some(true)` for a `Max-Age` of zero or less, `Some(false)` for a positive one, `None` when
/// it is not `-?DIGIT+`.
fn max_age_deletes_cookie(v: &[u8]) -> Option<bool> {
    let (negative, digits) = match v {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, v),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(negative || digits.iter().all(|&d| d == b'0'))
}

/// A cookie date (RFC 6265 §5.1.1, lenient as browsers are: `Thu, 01 Jan 1970 00:00:00 GMT`,
/// `Thursday, 01-Jan-70 00:00:01 GMT`, ...) as Unix seconds; dates before 1970 read as 0.
pub(crate) fn parse_date(s: &[u8]) -> Option<u64> {
    let (mut time, mut day, mut month, mut year) = (None, None, None, None);
    let tokens = s.split(|&c| is_date_delimiter(c)).filter(|t| !t.is_empty());
    for tok in tokens {
        if time.is_none() {
            if let Some(t) = hms(tok) {
                time = Some(t);
                continue;
            }
        }
        if day.is_none() {
            if let Some(d) = leading_digits(tok, 1, 2) {
                day = Some(d);
                continue;
            }
        }
        if month.is_none() {
            if let Some(m) = month_of(tok) {
                month = Some(m);
                continue;
            }
        }
        if year.is_none() {
            if let Some(y) = leading_digits(tok, 2, 4) {
                year = Some(y);
            }
        }
    }
    let ((h, mi, sec), day, month, mut year) = (time?, day?, month?, year?);
    year += match year {
        70..=99 => 1900,
        0..=69 => 2000,
        _ => 0,
    };
    if !(1..=31).contains(&day) || year < 1601 || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, i64::from(day));
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec);
    Some(u64::try_from(secs).unwrap_or(0))
}

/// RFC 6265 delimiter = %x09 / %x20-2F / %x3B-40 / %x5B-60 / %x7B-7E.
fn is_date_delimiter(c: u8) -> bool {
    matches!(c, 0x09 | 0x20..=0x2F | 0x3B..=0x40 | 0x5B..=0x60 | 0x7B..=0x7E)
}

/// `min..=max` digits at the start of `tok`, followed by the end or a non-digit.
fn leading_digits(tok: &[u8], min: usize, max: usize) -> Option<u32> {
    let n = tok.iter().take_while(|c| c.is_ascii_digit()).count();
    if n < min || n > max {
        return None;
    }
    Some(
        tok[..n]
            .iter()
            .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0')),
    )
}

/// `hh:mm:ss` (1–2 digits each) at the start of `tok`.
fn hms(tok: &[u8]) -> Option<(u32, u32, u32)> {
    let mut it = tok.splitn(3, |&c| c == b':');
    let (h, m, s) = (it.next()?, it.next()?, it.next()?);
    let whole = |f: &[u8]| {
        let digits = !f.is_empty() && f.len() <= 2 && f.iter().all(u8::is_ascii_digit);
        digits.then(|| leading_digits(f, 1, 2)).flatten()
    };
    Some((whole(h)?, whole(m)?, leading_digits(s, 1, 2)?))
}

/// Month number (1–12) from a token starting with its English three-letter abbreviation.
fn month_of(tok: &[u8]) -> Option<i64> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let prefix = tok.get(..3)?;
    let i = MONTHS
        .iter()
        .position(|m| prefix.eq_ignore_ascii_case(*m))?;
    i64::try_from(i + 1).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_fields() {
        let f = b"a=1; berth=tok;berth=second ; c";
        assert_eq!(find_in_field(f, b"berth"), Some(&b"tok"[..]));
        assert_eq!(find_in_field(f, b"a"), Some(&b"1"[..]));
        assert_eq!(find_in_field(f, b"c"), None);
        assert_eq!(find_in_field(f, b"Berth"), None);
        assert_eq!(find_in_field(b"  x = \"q v\" ", b"x"), Some(&b"q v"[..]));
        assert_eq!(find_in_field(b"x=\"", b"x"), Some(&b"\""[..]));
        assert_eq!(find_in_field(b"x=", b"x"), Some(&b""[..]));
        assert_eq!(find_in_field(b"", b"x"), None);
        assert_eq!(find_in_field(b";;;=;", b""), Some(&b""[..]));
        assert_eq!(find_in_field(b"x=a=b", b"x"), Some(&b"a=b"[..]));
        assert_eq!(
            find_in_field(b"\xff\xfe=1; x=\xff", b"x"),
            Some(&b"\xff"[..])
        );
    }

    #[test]
    fn set_cookie_fields() {
        let now = 1_700_000_000;
        let set = |f: &'static [u8]| set_cookie(f, b"SID", now);
        assert_eq!(
            set(b"SID=abc; Path=/; HttpOnly"),
            Some(SetCookie::Set(b"abc"))
        );
        assert_eq!(set(b"SID=\"abc\""), Some(SetCookie::Set(b"abc")));
        assert_eq!(set(b"OTHER=abc"), None);
        assert_eq!(set(b"garbage"), None);
        assert_eq!(set(b"SID="), Some(SetCookie::Delete));
        assert_eq!(set(b"SID=x; Max-Age=0"), Some(SetCookie::Delete));
        assert_eq!(set(b"SID=x; max-age=-1"), Some(SetCookie::Delete));
        assert_eq!(set(b"SID=x; Max-Age=60"), Some(SetCookie::Set(b"x")));
        assert_eq!(set(b"SID=x; Max-Age=oops"), Some(SetCookie::Set(b"x")));
        let past = b"SID=deleted; expires=Thu, 01-Jan-1970 00:00:01 GMT; path=/";
        assert_eq!(set(past), Some(SetCookie::Delete));
        let future = b"SID=x; Expires=Wed, 21 Oct 2037 07:28:00 GMT";
        assert_eq!(set(future), Some(SetCookie::Set(b"x")));
        // Max-Age wins over Expires, whichever comes first.
        let both = b"SID=x; Max-Age=3600; Expires=Thu, 01 Jan 1970 00:00:00 GMT";
        assert_eq!(set(both), Some(SetCookie::Set(b"x")));
        assert_eq!(set(b"SID=x; Expires=never"), Some(SetCookie::Set(b"x")));
    }

    #[test]
    fn dates() {
        let d = |s: &str| parse_date(s.as_bytes());
        assert_eq!(d("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(d("Wed, 21 Oct 2015 07:28:00 GMT"), Some(1_445_412_480));
        assert_eq!(d("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(d("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        assert_eq!(d("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
        assert_eq!(d("01 Jan 1900 00:00:00"), Some(0));
        assert_eq!(d("Thu, 01 Jan 1970 25:00:00 GMT"), None);
        assert_eq!(d("Thu, 32 Jan 1970 00:00:00 GMT"), None);
        assert_eq!(d("Thu, 01 Foo 1970 00:00:00 GMT"), None);
        assert_eq!(d(""), None);
        assert_eq!(d("\u{ff}\u{0}::"), None);
    }
}
