CREATE TABLE `revoked_sessions` (
	`subject_issuer` text NOT NULL,
	`sid` text NOT NULL,
	`at` integer NOT NULL,
	`relevant_until` integer NOT NULL,
	PRIMARY KEY(`subject_issuer`, `sid`)
);
--> statement-breakpoint
ALTER TABLE `revocation_events` ADD `sid` text;--> statement-breakpoint
ALTER TABLE `revocation_events` ADD `sub` text;--> statement-breakpoint
ALTER TABLE `tasks` ADD `dpop_jkt` text;