-- Rotation without a gap.
--
-- A rotation publishes the next key before it signs: the active key signs from
-- activates_at (NULL: from its creation), and the key it replaces keeps signing until
-- then (its retired_at lies ahead). An emergency rotation revokes the signing key: it
-- leaves the key set at once and is kept, revoked, for the record.
ALTER TABLE signing_keys ADD COLUMN activates_at timestamptz;
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_status_check;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_status_check CHECK (status IN ('active', 'retired', 'revoked'));
