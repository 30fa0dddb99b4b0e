//! The runner's JSON records (`summary.json`, `pretrained.json`, `timing.json`, `analysis-<profile>.json`), written
//! so that every float reads back as it was written: JSON has no NaN or infinity, so a non-finite number is
//! written as the string `"NaN"`, `"inf"` or `"-inf"` and its place is listed under the top-level key
//! `non_finite` (e.g. `["early_steps.0.loss"]`); a reader turns exactly those places back into numbers. A diverged
//! run's NaN loss is data, not a damaged file.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::atomic;

/// The top-level key that lists the places of non-finite numbers.
pub const NON_FINITE: &str = "non_finite";

/// `value` as pretty JSON, non-finite floats as strings listed under [`NON_FINITE`] (a record is a table: a
/// struct or a map).
pub fn to_string<T: Serialize>(value: &T) -> Result<String> {
    let value = toml::Value::try_from(value).context("a JSON record")?;
    let mut places = vec![];
    let mut json = to_json(&value, String::new(), &mut places);
    if !places.is_empty() {
        let Some(table) = json.as_object_mut() else { bail!("a record with non-finite numbers must be a table") };
        table.insert(NON_FINITE.into(), places.into_iter().map(serde_json::Value::String).collect());
    }
    Ok(serde_json::to_string_pretty(&json)?)
}

/// Reads a record written by [`to_string`] (or plain JSON).
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T> {
    let mut json: serde_json::Value = serde_json::from_str(text)?;
    let places = match json.as_object_mut().and_then(|t| t.remove(NON_FINITE)) {
        None => vec![],
        Some(serde_json::Value::Array(places)) => places,
        Some(other) => bail!("`{NON_FINITE}` must list places, got {other}"),
    };
    let mut value = to_toml(&json).context("a record")?;
    for place in places {
        let Some(place) = place.as_str() else { bail!("`{NON_FINITE}` lists a non-string {place}") };
        let slot =
            at(&mut value, place).with_context(|| format!("`{NON_FINITE}` names `{place}`, which is not there"))?;
        let number = match slot.as_str() {
            Some("NaN") => f64::NAN,
            Some("inf") => f64::INFINITY,
            Some("-inf") => f64::NEG_INFINITY,
            _ => bail!("`{place}` is listed in `{NON_FINITE}` but holds {slot}, not \"NaN\", \"inf\" or \"-inf\""),
        };
        *slot = toml::Value::Float(number);
    }
    Ok(value.try_into()?)
}

/// Writes a record atomically.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    atomic::write_bytes(path, to_string(value).with_context(|| format!("writing {}", path.display()))?.as_bytes())
}

/// Reads a record; the error names the file.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    from_str(&text).with_context(|| format!("{} does not read", path.display()))
}

fn to_json(value: &toml::Value, place: String, places: &mut Vec<String>) -> serde_json::Value {
    let join = |key: &str| if place.is_empty() { key.to_string() } else { format!("{place}.{key}") };
    match value {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) if f.is_finite() => serde_json::Value::from(*f),
        toml::Value::Float(f) => {
            places.push(place);
            let text = if f.is_nan() {
                "NaN"
            } else if *f > 0.0 {
                "inf"
            } else {
                "-inf"
            };
            serde_json::Value::String(text.into())
        }
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(items) => {
            items.iter().enumerate().map(|(i, v)| to_json(v, join(&i.to_string()), places)).collect()
        }
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v, join(k), places))).collect())
        }
    }
}

fn to_toml(value: &serde_json::Value) -> Result<toml::Value> {
    Ok(match value {
        serde_json::Value::Null => bail!("null is no value (a number written by an older tram as null?)"),
        serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().context("a number")?),
        },
        serde_json::Value::String(s) => toml::Value::String(s.clone()),
        serde_json::Value::Array(items) => toml::Value::Array(items.iter().map(to_toml).collect::<Result<_>>()?),
        serde_json::Value::Object(t) => toml::Value::Table(
            t.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| Ok((k.clone(), to_toml(v)?))).collect::<Result<_>>()?,
        ),
    })
}

fn at<'a>(value: &'a mut toml::Value, place: &str) -> Option<&'a mut toml::Value> {
    place.split('.').try_fold(value, |v, key| match v {
        toml::Value::Table(t) => t.get_mut(key),
        toml::Value::Array(a) => a.get_mut(key.parse::<usize>().ok()?),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_float_reads_back_as_written_and_strings_stay_strings() {
        #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
        struct Record {
            name: String,
            loss: f64,
            steps: Vec<(u64, f64)>,
            maybe: Option<f64>,
            nothing: Option<f64>,
        }
        let r = Record {
            name: "NaN".into(),
            loss: f64::NAN,
            steps: vec![(0, f64::INFINITY), (1, -f64::INFINITY), (2, 0.1)],
            maybe: Some(f64::NAN),
            nothing: None,
        };
        let text = to_string(&r).unwrap();
        let back: Record = from_str(&text).unwrap();
        assert_eq!(back.name, "NaN", "a string that reads NaN is not a number");
        assert!(back.loss.is_nan() && back.maybe.is_some_and(f64::is_nan) && back.nothing.is_none());
        assert_eq!(back.steps[..2], [(0, f64::INFINITY), (1, -f64::INFINITY)]);
        assert_eq!(back.steps[2], (2, 0.1));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["loss"], "NaN");
        assert_eq!(json[NON_FINITE], serde_json::json!(["loss", "maybe", "steps.0.1", "steps.1.1"]));
        // Plain JSON reads as before; an older file's null for a number is an error, not a silent default.
        assert_eq!(from_str::<(u64,)>("[3]").unwrap(), (3,));
        let old = r#"{"name": "x", "loss": null, "steps": [], "maybe": null}"#;
        assert!(format!("{:#}", from_str::<Record>(old).unwrap_err()).contains("missing field `loss`"));
    }
}
