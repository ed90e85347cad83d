-- Sign-in: the last TOTP time step accepted for a user, so a code works once (RFC 6238 §5.2:
-- a verifier must not accept the second attempt of the same OTP).
ALTER TABLE users ADD COLUMN totp_last_step BIGINT;
