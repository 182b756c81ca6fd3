-- The offer awaiting the driver's answer, as sent to the app (a serialized Offer): an app
-- that (re)connects is sent it first, so an offer made while its stream was down, or
-- while the driver service restarted, is not lost. Written only after the reservation's
-- reply is committed to Kafka; cleared by the answer, a new reservation or the release.
ALTER TABLE drivers ADD COLUMN offer bytea;
