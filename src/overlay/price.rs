//! Prices on tag cards: validation of `(amount, currency)` and formatting for display.
//!
//! Currency codes, minor units (decimal places) and symbols come from `iso_currency`
//! (ISO 4217). Number conventions (decimal and grouping separators, where the symbol goes)
//! come from a small per-language table below rather than full CLDR data: ICU's currency
//! formatter costs a large dependency tree and a lot of build time for a string that is
//! rarely more than "$19.99" or "19,99 €". Amounts are decimal strings and are never
//! rounded or parsed into floats, so "0.1 + 0.2" problems cannot happen.
//!
//! Symbol rules (documented overrides of `iso_currency`'s symbol):
//! - CHF: `iso_currency` gives "₣", which Swiss shops do not use; we write "CHF".
//! - A symbol the embedded card font cannot draw (anything outside Latin, Greek, Cyrillic and
//!   the Currency Symbols block, e.g. Arabic "د.ك" for KWD, ".د.ب" for BHD, Thai "฿"), and the
//!   placeholder "¤", is replaced by the ISO code ("KWD 1.250").
//! - With an explicit locale whose region does not use the currency, a symbol several
//!   currencies share is made unambiguous: CAD "CA$", AUD "A$", NZD "NZ$", MXN "MX$",
//!   CNY "CN¥", USD "US$" (only in other dollar countries), JPY "JP¥" (only in China), and any
//!   other shared symbol ("kr", "$" of other pesos, ...) becomes the ISO code ("SEK").
//! - A symbol ending in a letter is separated from a following number by a no-break space
//!   ("CHF 19.99", "Rp 19.999,00"), as CLDR does.

use std::collections::HashMap;
use std::sync::OnceLock;

use iso_currency::Currency;

/// Why a price cannot be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// Not an ISO 4217 currency code used for prices (unknown, lower-case, or without minor
    /// units such as XAU, or an accounting fund such as CLF).
    #[error(
        "{0:?} is not an ISO 4217 currency code for prices: use an upper-case code such as USD, EUR or JPY"
    )]
    UnknownCurrency(String),
    /// The amount is not a plain non-negative decimal number.
    #[error(
        "amount {0:?} is not a price: use digits with an optional '.' and fraction, like \"19.99\" \
         (no sign, exponent, spaces or thousands separators; at most 12 digits before the '.')"
    )]
    BadAmount(String),
    /// More (non-zero) decimal places than the currency has minor units.
    #[error("{currency} prices have at most {allowed} decimal place(s); the amount has more")]
    TooManyDecimals {
        /// ISO code.
        currency: String,
        /// The currency's minor units.
        allowed: u32,
    },
}

impl PriceError {
    /// The request field at fault: "currency" or "amount".
    pub fn field(&self) -> &'static str {
        match self {
            PriceError::UnknownCurrency(_) => "currency",
            PriceError::BadAmount(_) | PriceError::TooManyDecimals { .. } => "amount",
        }
    }
}

/// Longest integer part accepted (a trillion minus one units is plenty for a product).
const MAX_INTEGER_DIGITS: usize = 12;
/// Longest fraction accepted (including trailing zeros).
const MAX_FRACTION_DIGITS: usize = 12;

/// A checked amount: integer digits without leading zeros ("0" for zero) and the fraction
/// padded to the currency's minor units.
struct Amount {
    integer: String,
    fraction: String,
}

/// The currency, if `code` is an upper-case ISO 4217 code with minor units and not a fund.
fn currency(code: &str) -> Result<(Currency, u32), PriceError> {
    let unknown = || PriceError::UnknownCurrency(code.to_owned());
    if !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(unknown());
    }
    let cur = Currency::from_code(code).ok_or_else(unknown)?;
    if cur.is_fund() || cur.is_special() {
        return Err(unknown());
    }
    let exp = cur.exponent().ok_or_else(unknown)?;
    Ok((cur, u32::from(exp)))
}

fn amount(text: &str, code: &str, exp: u32) -> Result<Amount, PriceError> {
    let bad = || PriceError::BadAmount(text.to_owned());
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || int.len() > MAX_INTEGER_DIGITS {
        return Err(bad());
    }
    let frac = match frac {
        Some(f) if !digits(f) || f.len() > MAX_FRACTION_DIGITS => return Err(bad()),
        Some(f) => f,
        None => "",
    };
    // Trailing zeros beyond the minor units are harmless ("1999.00" JPY is 1999 yen).
    let significant = frac.trim_end_matches('0');
    if significant.len() > exp as usize {
        return Err(PriceError::TooManyDecimals {
            currency: code.to_owned(),
            allowed: exp,
        });
    }
    let integer = int.trim_start_matches('0');
    let mut fraction = significant.to_owned();
    while fraction.len() < exp as usize {
        fraction.push('0');
    }
    Ok(Amount {
        integer: if integer.is_empty() {
            "0".to_owned()
        } else {
            integer.to_owned()
        },
        fraction,
    })
}

/// Checks `amount` (a decimal string: digits, optional '.' and fraction, no sign, no exponent, at most 12 integer digits)
/// against the ISO 4217 `currency` (upper-case code, must be known to iso_currency and have minor units, i.e. not XAU etc.).
pub fn validate(amount_text: &str, currency_code: &str) -> Result<(), PriceError> {
    let (_, exp) = currency(currency_code)?;
    amount(amount_text, currency_code, exp).map(|_| ())
}

/// Where the symbol goes relative to the number.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// "$19.99" (a no-break space is added after a symbol ending in a letter: "CHF 19.99").
    Before,
    /// "€ 19,99": before, always with a no-break space.
    BeforeSpace,
    /// "19,99 €": after, with a no-break space.
    After,
}

/// A language's (or region's) number and currency conventions.
#[derive(Clone, Copy)]
struct Conv {
    decimal: &'static str,
    group: &'static str,
    /// Lakh/crore grouping: 1,23,45,678.
    indian: bool,
    /// Integer digits needed before grouping starts (4: "1,999"; 5: "1999" but "19 999").
    min_grouping: usize,
    place: Place,
}

const NBSP: &str = "\u{A0}";
const NNBSP: &str = "\u{202F}";

const fn conv(decimal: &'static str, group: &'static str, place: Place) -> Conv {
    Conv {
        decimal,
        group,
        indian: false,
        min_grouping: 4,
        place,
    }
}

/// Conventions for a language (lower-case) and optional region (upper-case), CLDR-like.
fn conventions(lang: &str, region: Option<&str>) -> Conv {
    use Place::*;
    match (lang, region) {
        ("en" | "hi", Some("IN")) | ("hi", None) => Conv {
            indian: true,
            ..conv(".", ",", Before)
        },
        ("de" | "it", Some("CH" | "LI")) => conv(".", "\u{2019}", BeforeSpace),
        ("de", Some("AT")) => conv(",", ".", BeforeSpace),
        ("de" | "it" | "da" | "el" | "ro" | "vi" | "hr" | "sl" | "sr", _) => conv(",", ".", After),
        ("es", Some("ES") | None) => Conv {
            min_grouping: 5,
            ..conv(",", ".", After)
        },
        ("es", Some(_)) => conv(".", ",", Before), // Latin America, US
        ("fr", _) => conv(",", NNBSP, After),
        ("nl", _) => conv(",", ".", BeforeSpace),
        ("pt", Some("PT")) => Conv {
            min_grouping: 5,
            ..conv(",", NBSP, After)
        },
        ("pt", _) => conv(",", ".", BeforeSpace),
        ("pl", _) => Conv {
            min_grouping: 5,
            ..conv(",", NBSP, After)
        },
        (
            "ru" | "uk" | "be" | "bg" | "kk" | "cs" | "sk" | "hu" | "sv" | "fi" | "nb" | "no"
            | "nn" | "lt" | "lv" | "et",
            _,
        ) => conv(",", NBSP, After),
        ("tr" | "id", _) => conv(",", ".", Before),
        // en, ja, zh, ko, th, he, ... and anything unknown.
        _ => conv(".", ",", Before),
    }
}

/// The locale whose conventions a currency's home market uses (for `locale: None`).
fn home_locale(cur: Currency) -> (&'static str, Option<&'static str>) {
    use Currency::*;
    match cur {
        EUR => ("de", Some("DE")),
        GBP => ("en", Some("GB")),
        JPY => ("ja", Some("JP")),
        CHF => ("de", Some("CH")),
        CNY => ("zh", Some("CN")),
        KRW => ("ko", Some("KR")),
        INR => ("en", Some("IN")),
        BRL => ("pt", Some("BR")),
        MXN => ("es", Some("MX")),
        SEK => ("sv", Some("SE")),
        NOK => ("nb", Some("NO")),
        DKK => ("da", Some("DK")),
        PLN => ("pl", Some("PL")),
        CZK => ("cs", Some("CZ")),
        HUF => ("hu", Some("HU")),
        RON => ("ro", Some("RO")),
        RUB => ("ru", Some("RU")),
        UAH => ("uk", Some("UA")),
        TRY => ("tr", Some("TR")),
        IDR => ("id", Some("ID")),
        VND => ("vi", Some("VN")),
        _ => ("en", None),
    }
}

/// The language's most common region, to decide whether a currency is local when a locale
/// gives no region ("de" is read as "de-DE").
fn default_region(lang: &str) -> Option<&'static str> {
    Some(match lang {
        "en" => "US",
        "de" => "DE",
        "fr" => "FR",
        "es" => "ES",
        "it" => "IT",
        "nl" => "NL",
        "pt" => "BR",
        "ja" => "JP",
        "zh" => "CN",
        "ko" => "KR",
        "ru" => "RU",
        "uk" => "UA",
        "pl" => "PL",
        "sv" => "SE",
        "tr" => "TR",
        "hi" => "IN",
        _ => return None,
    })
}

/// True when the embedded card font (Noto Sans Latin/Greek/Cyrillic subset) can draw `c`.
fn drawable(c: char) -> bool {
    matches!(c,
        ' '..='~' | '\u{A0}'..='\u{24F}' | '\u{1E00}'..='\u{1EFF}' | '\u{370}'..='\u{3FF}'
        | '\u{400}'..='\u{4FF}' | '\u{20A0}'..='\u{20C0}')
}

/// The currency's own symbol, with the overrides listed in the module documentation.
fn home_symbol(cur: Currency) -> String {
    let sym = cur.symbol().symbol;
    let sym = sym.trim();
    if cur == Currency::CHF || sym.is_empty() || sym == "¤" || !sym.chars().all(drawable) {
        cur.code().to_owned()
    } else {
        sym.to_owned()
    }
}

/// How many currencies use each symbol (after overrides), to spot ambiguous ones.
fn symbol_counts() -> &'static HashMap<String, u32> {
    static COUNTS: OnceLock<HashMap<String, u32>> = OnceLock::new();
    COUNTS.get_or_init(|| {
        let mut counts = HashMap::new();
        let letters = b'A'..=b'Z';
        for a in letters.clone() {
            for b in letters.clone() {
                for c in letters.clone() {
                    let code = [a, b, c];
                    let Ok(code) = std::str::from_utf8(&code) else {
                        continue;
                    };
                    if let Ok((cur, _)) = currency(code) {
                        *counts.entry(home_symbol(cur)).or_insert(0) += 1;
                    }
                }
            }
        }
        counts
    })
}

/// The symbol to show for `cur` to readers in `region` (None: home market).
fn symbol(cur: Currency, region: Option<&str>) -> String {
    let home = home_symbol(cur);
    let Some(region) = region else { return home };
    let local = cur.used_by().iter().any(|c| c.to_string() == region);
    use Currency::*;
    match cur {
        _ if local => home,
        JPY if region == "CN" => "JP¥".to_owned(),
        USD if ["CA", "AU", "NZ", "MX", "SG", "HK", "TW", "AR", "CL", "CO"].contains(&region) => {
            "US$".to_owned()
        }
        // Primary owners of shared symbols keep them abroad.
        USD | GBP | JPY | EUR => home,
        CAD => "CA$".to_owned(),
        AUD => "A$".to_owned(),
        NZD => "NZ$".to_owned(),
        MXN => "MX$".to_owned(),
        CNY => "CN¥".to_owned(),
        _ if symbol_counts().get(&home).copied().unwrap_or(0) > 1 => cur.code().to_owned(),
        _ => home,
    }
}

/// `digits` (no leading zeros) with group separators.
fn group(digits: &str, c: &Conv) -> String {
    let n = digits.len();
    if n < c.min_grouping {
        return digits.to_owned();
    }
    // Group boundaries counted from the right: every 3, or 3 then every 2 (Indian).
    let boundary = |from_right: usize| {
        if c.indian {
            from_right == 3 || (from_right > 3 && (from_right - 3).is_multiple_of(2))
        } else {
            from_right.is_multiple_of(3)
        }
    };
    let mut out = String::with_capacity(n + n / 2 * c.group.len());
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && boundary(n - i) {
            out.push_str(c.group);
        }
        out.push(ch);
    }
    out
}

/// Language (lower-case) and region (upper-case) of a BCP-47 tag like "en-US", "zh-Hant-TW",
/// "es-419" or "de_CH"; script, variants and extensions are ignored.
fn parse_locale(tag: &str) -> (String, Option<String>) {
    let mut parts = tag.trim().split(['-', '_']);
    let lang = parts.next().unwrap_or("").to_ascii_lowercase();
    let region = parts
        .take_while(|p| p.len() > 1) // a singleton starts an extension
        .find(|p| {
            (p.len() == 2 && p.bytes().all(|b| b.is_ascii_alphabetic()))
                || (p.len() == 3 && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_ascii_uppercase);
    (lang, region)
}

/// The price as shown on the card, formatted the way the currency's home market writes it when `locale` is None
/// (USD "$19.99", EUR "19,99 €" with U+00A0 before the symbol, JPY "¥1,999", GBP "£19.99", CHF "CHF 19.99", ...),
/// or for a BCP-47 `locale` like "en-US", "de-DE", "fr-FR", "ja-JP" when given. Always the currency's number of minor
/// units (49.9 USD -> $49.90), grouping separators for thousands.
///
/// Unknown languages use English conventions. The separators and spaces are U+00A0 and
/// U+202F (narrow no-break space, French grouping) where the language writes a space, so a
/// price never wraps.
pub fn format(
    amount_text: &str,
    currency_code: &str,
    locale: Option<&str>,
) -> Result<String, PriceError> {
    let (cur, exp) = currency(currency_code)?;
    let a = amount(amount_text, currency_code, exp)?;
    let (c, sym) = match locale {
        None => {
            let (lang, region) = home_locale(cur);
            (conventions(lang, region), symbol(cur, None))
        }
        Some(tag) => {
            let (lang, region) = parse_locale(tag);
            let region = region.as_deref().or_else(|| default_region(&lang));
            (conventions(&lang, region), symbol(cur, region))
        }
    };
    let mut number = group(&a.integer, &c);
    if exp > 0 {
        number.push_str(c.decimal);
        number.push_str(&a.fraction);
    }
    let letter_end = sym.chars().last().is_some_and(char::is_alphabetic);
    Ok(match c.place {
        Place::Before if !letter_end => format!("{sym}{number}"),
        Place::Before | Place::BeforeSpace => format!("{sym}{NBSP}{number}"),
        Place::After => format!("{number}{NBSP}{sym}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(amount: &str, cur: &str, locale: Option<&str>) -> String {
        format(amount, cur, locale).unwrap_or_else(|e| panic!("{amount} {cur} {locale:?}: {e}"))
    }

    #[test]
    fn home_market_examples() {
        assert_eq!(f("19.99", "USD", None), "$19.99");
        assert_eq!(f("19.99", "EUR", None), "19,99\u{A0}€");
        assert_eq!(f("1999", "JPY", None), "¥1,999");
        assert_eq!(f("19.99", "GBP", None), "£19.99");
        assert_eq!(f("19.99", "CHF", None), "CHF\u{A0}19.99");
        assert_eq!(f("1999.5", "CHF", None), "CHF\u{A0}1\u{2019}999.50");
        assert_eq!(f("49.9", "USD", None), "$49.90");
        assert_eq!(f("1234567.8", "USD", None), "$1,234,567.80");
        assert_eq!(f("1234567", "EUR", None), "1.234.567,00\u{A0}€");
        assert_eq!(f("0.5", "USD", None), "$0.50");
        assert_eq!(f("007", "USD", None), "$7.00");
        assert_eq!(f("19.99", "CAD", None), "$19.99");
        assert_eq!(f("19.99", "AUD", None), "$19.99");
        assert_eq!(f("19.99", "CNY", None), "¥19.99");
        assert_eq!(f("19999", "KRW", None), "₩19,999");
        assert_eq!(f("1234567.5", "INR", None), "₹12,34,567.50");
        assert_eq!(f("1999.9", "BRL", None), "R$\u{A0}1.999,90");
        assert_eq!(f("19.99", "MXN", None), "$19.99");
        assert_eq!(f("1999", "SEK", None), "1\u{A0}999,00\u{A0}kr");
        assert_eq!(f("1999", "PLN", None), "1999,00\u{A0}zł");
        assert_eq!(f("19999", "PLN", None), "19\u{A0}999,00\u{A0}zł");
        assert_eq!(f("1999", "RUB", None), "1\u{A0}999,00\u{A0}₽");
        assert_eq!(f("19.99", "UAH", None), "19,99\u{A0}₴");
        assert_eq!(f("19.99", "TRY", None), "₺19,99");
        assert_eq!(f("19.999", "BHD", None), "BHD\u{A0}19.999");
        assert_eq!(f("1.25", "KWD", None), "KWD\u{A0}1.250");
        assert_eq!(f("199", "THB", None), "THB\u{A0}199.00");
    }

    #[test]
    fn explicit_locales() {
        assert_eq!(f("1999.99", "USD", Some("en-US")), "$1,999.99");
        assert_eq!(f("1999.99", "EUR", Some("de-DE")), "1.999,99\u{A0}€");
        assert_eq!(f("1999.99", "EUR", Some("fr-FR")), "1\u{202F}999,99\u{A0}€");
        assert_eq!(f("1999", "JPY", Some("ja-JP")), "¥1,999");
        assert_eq!(f("19.99", "EUR", Some("en-US")), "€19.99");
        assert_eq!(f("19.99", "USD", Some("de-DE")), "19,99\u{A0}$");
        assert_eq!(f("19.99", "USD", Some("en-CA")), "US$19.99");
        assert_eq!(f("19.99", "CAD", Some("en-CA")), "$19.99");
        assert_eq!(f("19.99", "CAD", Some("en-US")), "CA$19.99");
        assert_eq!(f("19.99", "AUD", Some("en_GB")), "A$19.99");
        assert_eq!(f("19.99", "CNY", Some("en")), "CN¥19.99");
        assert_eq!(f("1999", "JPY", Some("zh-Hans-CN")), "JP¥1,999");
        assert_eq!(f("19.99", "SEK", Some("en-US")), "SEK\u{A0}19.99");
        assert_eq!(f("19.99", "SEK", Some("sv")), "19,99\u{A0}kr");
        assert_eq!(f("19.99", "EUR", Some("de-AT")), "€\u{A0}19,99");
        assert_eq!(f("19.99", "EUR", Some("nl-NL")), "€\u{A0}19,99");
        assert_eq!(f("1999.99", "EUR", Some("es-ES")), "1999,99\u{A0}€");
        assert_eq!(f("1999.99", "MXN", Some("es-MX")), "$1,999.99");
        assert_eq!(f("19.99", "CHF", Some("fr-CH")), "19,99\u{A0}CHF");
        assert_eq!(f("19.99", "USD", Some("xx-YY")), "$19.99"); // unknown language: English
        assert_eq!(f("19.99", "USD", Some("")), "$19.99");
    }

    #[test]
    fn errors() {
        let unknown = |c: &str| PriceError::UnknownCurrency(c.to_owned());
        assert_eq!(validate("1", "XYZ"), Err(unknown("XYZ")));
        assert_eq!(validate("1", "usd"), Err(unknown("usd")));
        assert_eq!(validate("1", "XAU"), Err(unknown("XAU"))); // gold: no minor units
        assert_eq!(validate("1", "XXX"), Err(unknown("XXX")));
        assert_eq!(validate("1", "CLF"), Err(unknown("CLF"))); // accounting fund
        assert_eq!(validate("1", ""), Err(unknown("")));
        assert_eq!(validate("1", "EURO"), Err(unknown("EURO")));
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "+1",
            "1e3",
            "1,99",
            " 1",
            "1 000",
            "1.2.3",
            "١٢",
            "1234567890123",
            "0.0000000000001",
        ] {
            assert_eq!(
                validate(bad, "USD"),
                Err(PriceError::BadAmount(bad.to_owned())),
                "{bad:?}"
            );
        }
        let too_many = |c: &str, allowed| PriceError::TooManyDecimals {
            currency: c.to_owned(),
            allowed,
        };
        assert_eq!(validate("19.999", "USD"), Err(too_many("USD", 2)));
        assert_eq!(validate("1999.5", "JPY"), Err(too_many("JPY", 0)));
        assert_eq!(validate("1.2345", "BHD"), Err(too_many("BHD", 3)));
        assert_eq!(format("19.999", "USD", None), Err(too_many("USD", 2)));
        // Trailing zeros are not extra precision.
        assert_eq!(validate("1999.00", "JPY"), Ok(()));
        assert_eq!(f("1999.00", "JPY", None), "¥1,999");
        assert_eq!(validate("123456789012.99", "USD"), Ok(()));

        assert_eq!(unknown("x").field(), "currency");
        assert_eq!(PriceError::BadAmount("x".into()).field(), "amount");
        assert_eq!(too_many("USD", 2).field(), "amount");
        let msg = too_many("JPY", 0).to_string();
        assert!(
            msg.contains("JPY prices have at most 0 decimal place"),
            "{msg}"
        );
        assert!(unknown("usd").to_string().contains("upper-case"));
        assert!(
            PriceError::BadAmount("1e3".into())
                .to_string()
                .contains("\"1e3\"")
        );
    }

    /// Every formatted price can be drawn with the embedded font alone (no boxes on cards).
    #[test]
    fn every_currency_renders_with_the_embedded_font() {
        let mut fonts = super::super::text::Fonts::new(&[]).expect("embedded font");
        let mut checked = 0;
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = String::from_utf8(vec![a, b, c]).expect("ascii");
                    if validate("1", &code).is_err() {
                        continue;
                    }
                    for locale in [
                        None,
                        Some("en-US"),
                        Some("de-DE"),
                        Some("fr-FR"),
                        Some("ja-JP"),
                    ] {
                        let s = f("1234", &code, locale);
                        assert!(fonts.covers(&s), "{code} {locale:?}: {s:?}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 150, "{checked}");
    }
}
