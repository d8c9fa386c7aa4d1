-- Handoffs staff must answer first: a person in distress (thoughts of suicide or
-- self-harm, abuse, a medical emergency, someone dying), found by the distress rules or
-- judged so by a provider. An urgent handoff is never closed by the timeout, and
-- /health warns while one is open.
ALTER TABLE handoffs ADD COLUMN urgent boolean NOT NULL DEFAULT false;
