-- Prosody 0.12 configuration for xmppd's benchmark (bench/).
-- bench/servers.py fills in the @NAME@ placeholders and starts
-- `prosody -F --config <this file>`; nothing here is used by a system service.

daemonize = false
run_as_root = true            -- the bench may run as root; Prosody would otherwise switch user
pidfile = "@RUN_DIR@/prosody.pid"
data_path = "@DATA_DIR@"
log = {
	{ levels = { min = "warn" }, to = "file", filename = "@RUN_DIR@/prosody.log" };
}

interfaces = { "127.0.0.1" }
c2s_ports = { @C2S_PORT@ }
c2s_direct_tls_ports = { @DIRECT_TLS_PORT@ }
network_settings = {
	tcp_backlog = 1024;       -- bursts of hundreds of concurrent connects
}

modules_enabled = {
	"roster"; "saslauth"; "tls"; "disco"; "ping"; "posix";
	"register";               -- XEP-0077, used by the bench to create its accounts
	"offline";                -- XEP-0160, measured by offline_drain
	@EXTRA_MODULES@           -- "smacks" (XEP-0198) for the scenarios that use it
}
modules_disabled = { "s2s" }

authentication = "internal_hashed"   -- SCRAM-SHA-1 with stored keys
storage = "internal"                 -- Prosody's default file storage
storage_archive_item_limit = 100000  -- offline queue of 5,000 fits

c2s_require_encryption = false       -- plain-text runs; STARTTLS is still offered
allow_registration = true
-- No registration throttle: mod_register_limits only throttles when
-- min_seconds_between_registrations or registration_throttle_max is set.
limits = {}                          -- mod_limits is not loaded: no rate limits on c2s

certificates = "@CERT_DIR@"
ssl = {
	certificate = "@CERT@";
	key = "@KEY@";
}

VirtualHost "@DOMAIN@"

Component "@MUC_DOMAIN@" "muc"
	restrict_room_creation = false
