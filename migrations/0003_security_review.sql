CREATE TABLE `broker_meta` (
	`name` text PRIMARY KEY NOT NULL,
	`value` text NOT NULL
);
--> statement-breakpoint
ALTER TABLE `revocation_events` ADD `subject_issuer` text;--> statement-breakpoint
ALTER TABLE `revocation_events` ADD `kid` text;--> statement-breakpoint
ALTER TABLE `tokens` ADD `kid` text;--> statement-breakpoint
CREATE INDEX `tasks_expires_idx` ON `tasks` (`expires_at`);