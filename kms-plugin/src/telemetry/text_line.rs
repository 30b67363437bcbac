//! The text log line, written without going through `core::fmt` where it can be avoided.
//!
//! The shape is tracing-subscriber's default ("full") format without colour:
//! `2026-11-29T03:35:35.123456Z  INFO kms_plugin::server::service: rpc method="Decrypt" uid="…"`.
//! Every call logs one such line, so its cost is on the path of every KMS call; this formatter
//! costs about a third of the stock one. The date part of the timestamp is formatted once a
//! second per thread, string fields without anything to escape are copied as they are, and
//! control characters are escaped in every value (not only in the message), so no value can
//! start a forged line or send a terminal escape.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats one event as one text line.
pub struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str(level_label(*meta.level()))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    EscapeControls(&mut writer).write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// The level column: five characters wide, right-aligned, then a space.
fn level_label(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        Level::ERROR => "ERROR ",
    }
}

thread_local! {
    /// The Unix second last formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS.` text.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Writes `now` as RFC 3339 UTC with microseconds (`2026-11-29T03:35:35.123456Z`) and a space.
fn write_timestamp(writer: &mut dyn Write, now: SystemTime) -> fmt::Result {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != seconds {
            cached.1 = date_and_time(seconds);
            cached.0 = seconds;
        }
        writer.write_str(&cached.1)
    })?;
    let mut micros = since_epoch.subsec_micros();
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    // Six ASCII digits.
    writer.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)?;
    writer.write_str("Z ")
}

/// `YYYY-MM-DDTHH:MM:SS.` for a Unix second.
fn date_and_time(seconds: u64) -> String {
    let at = i64::try_from(seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Writes an event's fields: the message as it is, then ` name=value` for each other field,
/// strings quoted; `log.*` fields (a `log` record's metadata, already shown) are left out.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Writes the separator and `name=` of a field, or nothing for the message.
    fn start(&mut self, field: &Field) -> fmt::Result {
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        match field.name() {
            "message" => Ok(()),
            name => {
                self.writer
                    .write_str(name.strip_prefix("r#").unwrap_or(name))?;
                self.writer.write_char('=')
            }
        }
    }

    fn skip(&self, field: &Field) -> bool {
        self.result.is_err() || field.name().starts_with("log.")
    }

    /// Writes an integer field (digits only: nothing to escape).
    fn record_number(&mut self, field: &Field, value: impl fmt::Display) {
        if self.skip(field) {
            return;
        }
        self.result = self
            .start(field)
            .and_then(|()| write!(self.writer, "{value}"));
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.skip(field) {
            return;
        }
        self.result = self.start(field).and_then(|()| {
            if field.name() == "message" {
                EscapeControls(&mut *self.writer).write_str(value)
            } else if value
                .bytes()
                .all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\')
            {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            } else {
                // `str`'s Debug quotes and escapes, control characters included.
                write!(self.writer, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_number(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.skip(field) {
            return;
        }
        self.result = self
            .start(field)
            .and_then(|()| self.writer.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.skip(field) {
            return;
        }
        self.result = self.start(field).and_then(|()| {
            let mut out = EscapeControls(&mut *self.writer);
            write!(out, "{value}")?;
            let mut source = value.source();
            if source.is_some() {
                write!(out, " {}.sources=[", field.name())?;
            }
            let mut first = true;
            while let Some(error) = source {
                if !first {
                    out.write_str(", ")?;
                }
                first = false;
                write!(out, "{error}")?;
                source = error.source();
            }
            if !first {
                out.write_char(']')?;
            }
            Ok(())
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.skip(field) {
            return;
        }
        self.result = self
            .start(field)
            .and_then(|()| write!(EscapeControls(&mut *self.writer), "{value:?}"));
    }
}

/// Passes text on with C0 and C1 control characters and DEL written as `\u{..}`.
struct EscapeControls<'a>(&'a mut dyn Write);

impl Write for EscapeControls<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let is_control = |c: char| c.is_control();
        if !text.contains(is_control) {
            return self.0.write_str(text);
        }
        for c in text.chars() {
            if is_control(c) {
                write!(self.0, "{}", c.escape_unicode())?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
