//! Shared by the targets that run the bounce reader: libFuzzer's panic hook aborts on any panic
//! before it unwinds, but mail-parser's own panics are caught by `inbound::parse` (that is its
//! contract), so those are let through to unwind; any other panic still aborts.

use std::sync::Once;

static HOOK: Once = Once::new();

pub fn let_mail_parser_panics_unwind() {
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("mail-parser")) {
                return;
            }
            abort(info);
        }));
    });
}
