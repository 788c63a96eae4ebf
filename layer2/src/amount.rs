//! Amounts as operators write them: `1500`, `1500wei`, `2.5gwei`, `0.1eth`.
//! Always exact integers of the chain's smallest unit (wei); a fraction
//! finer than a wei is refused, never rounded.

/// Parses an amount; the error says what is allowed.
pub fn parse(s: &str) -> Result<u128, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, decimals) = if let Some(n) = t.strip_suffix("gwei") {
        (n, 9u32)
    } else if let Some(n) = t.strip_suffix("wei") {
        (n, 0)
    } else if let Some(n) = t.strip_suffix("eth") {
        (n, 18)
    } else {
        (t.as_str(), 0)
    };
    let bad = || {
        format!(
            "amount `{s}`: a number of wei, or a decimal with unit gwei or eth (e.g. 1500, 2.5gwei, 0.1eth)"
        )
    };
    let num = num.trim();
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if frac.len() > decimals as usize {
        return Err(format!(
            "amount `{s}` is finer than 1 wei: at most {decimals} decimals with this unit"
        ));
    }
    let scale = 10u128.pow(decimals);
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac_v: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().map_err(|_| bad())? * 10u128.pow(decimals - frac.len() as u32)
    };
    int.checked_mul(scale)
        .and_then(|v| v.checked_add(frac_v))
        .ok_or_else(|| format!("amount `{s}` is too large"))
}

/// Shows wei as ETH with up to 18 decimals, trailing zeros cut: `1.5 ETH`.
pub fn format_eth(wei: u128) -> String {
    let (int, frac) = (wei / 10u128.pow(18), wei % 10u128.pow(18));
    if frac == 0 {
        return format!("{int} ETH");
    }
    let f = format!("{frac:018}");
    format!("{int}.{} ETH", f.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_exactly_and_bad_ones_say_what_is_allowed() {
        assert_eq!(parse("1500").unwrap(), 1500);
        assert_eq!(parse("1500wei").unwrap(), 1500);
        assert_eq!(parse("2.5gwei").unwrap(), 2_500_000_000);
        assert_eq!(parse("0.1eth").unwrap(), 100_000_000_000_000_000);
        assert_eq!(parse("3 ETH").unwrap(), 3 * 10u128.pow(18));
        assert!(parse("1.5").unwrap_err().contains("finer than 1 wei"));
        assert!(parse("-1").unwrap_err().contains("number of wei"));
        assert!(parse("eth").unwrap_err().contains("number of wei"));
        assert!(parse("1e18").unwrap_err().contains("number of wei"));
        assert!(parse("999999999999999999999999eth")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(format_eth(1_500_000_000_000_000_000), "1.5 ETH");
        assert_eq!(format_eth(2 * 10u128.pow(18)), "2 ETH");
        assert_eq!(format_eth(1), "0.000000000000000001 ETH");
    }
}
