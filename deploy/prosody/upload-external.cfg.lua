-- Prosody, mod_http_upload_external (from prosody-modules), pointed at upslot.
--
-- Install: `prosodyctl install --server=https://modules.prosody.im/rocks/
-- mod_http_upload_external` (or Debian's prosody-modules package), then add
-- this to /etc/prosody/prosody.cfg.lua (or conf.d/), with your domain and
-- the secret from /var/lib/upslot/secret, and `prosodyctl reload`.
--
-- These lines are what `upslot serve` prints; tests/deploy.rs keeps the two
-- the same.
--
-- The base URL is upslot's public https URL with base_path, and must end in
-- "/": the module appends "<uuid>/<file name>" to it as is.
-- The size limit is max_file_size in bytes (100 MiB); Prosody refuses larger
-- slots before any client sends a byte.
--
-- Protocol v1 (the default) signs path and size. v2 signs the content type
-- too, so a slot cannot be used to upload a different type: uncomment the
-- protocol line to use it (upslot accepts both; no change on its side).

-- Prosody, mod_http_upload_external (prosody-modules), protocol v1 or v2:
Component "upload.example.org" "http_upload_external"
    http_upload_external_base_url = "https://upload.example.org/upload/"
    http_upload_external_secret = "<secret>"
    http_upload_external_file_size_limit = 104857600
    -- http_upload_external_protocol = "v2"
