//! Send slots of the frequency caps on fjall: one JSON list per contact
//! and scope (the portfolio's marketing cap, or one campaign's),
//! read, decided and written under the contact's striped lock
//! (docs/ARCHITECTURE.md, "Frequency caps").

use chrono::{DateTime, Utc};

use super::*;
use crate::domain::{take_slot, ContactKey, FrequencyCap, SendSlot, SlotTake};

impl Inner {
    pub(super) fn take_send_slot(
        &self,
        scope: &str,
        contact: &ContactKey,
        send: &str,
        cap: FrequencyCap,
        now: DateTime<Utc>,
    ) -> StoreResult<SlotTake> {
        let _guard = self.stripe(contact);
        // The portfolio's slots under the contact alone, a campaign's under
        // the contact, then 0, then the campaign.
        let mut key = contact.as_str().as_bytes().to_vec();
        if !scope.is_empty() {
            key.push(0);
            key.extend_from_slice(scope.as_bytes());
        }
        let key = key.as_slice();
        let mut slots: Vec<SendSlot> = self.get_json(&self.send_slots, key)?.unwrap_or_default();
        let before = slots.len();
        let took = take_slot(&mut slots, send, cap, now);
        // Write when a slot was taken or freed ones were dropped.
        if took == SlotTake::Taken || slots.len() != before {
            self.put_row(&self.send_slots, key, &slots)?;
        }
        Ok(took)
    }
}
