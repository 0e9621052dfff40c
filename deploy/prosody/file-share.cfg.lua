-- Prosody 0.12+, mod_http_file_share in external mode, pointed at upslot.
--
-- With http_file_share_base_url set, Prosody stores nothing itself: it hands
-- clients a slot whose PUT carries a JWT (HS256, signed with the secret) in
-- `Authorization: Bearer`, and upslot verifies and stores the file. No
-- mod_http listener is needed on Prosody's side for this.
--
-- Add this to /etc/prosody/prosody.cfg.lua (or conf.d/), with your domain and
-- the secret from /var/lib/upslot/secret, and `prosodyctl reload`.
-- These lines are what `upslot serve` prints; tests/deploy.rs keeps the two
-- the same.
--
-- The size limit is upslot's max_file_size in bytes (100 MiB; Prosody's own
-- default is 10 MiB). Prosody also caps each user's uploads per day
-- (http_file_share_daily_quota, 10 times the size limit by default).
-- expires_after puts the file's lifetime into the token's `expires` claim;
-- keep it equal to upslot's retention (7 days): upslot deletes a file at the
-- earlier of the two.

-- Prosody 0.12+, mod_http_file_share in external mode:
Component "share.example.org" "http_file_share"
    http_file_share_base_url = "https://upload.example.org/upload/"
    http_file_share_secret = "<secret>"
    http_file_share_size_limit = 104857600
    http_file_share_expires_after = 604800 -- 7 days, as upslot keeps files
