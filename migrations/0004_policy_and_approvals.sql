CREATE TABLE `policy_sets` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`version` text NOT NULL,
	`text` text NOT NULL,
	`loaded_at` integer NOT NULL,
	`loaded_by` text NOT NULL
);
--> statement-breakpoint
ALTER TABLE `audit_events` ADD `policy_version` text;--> statement-breakpoint
ALTER TABLE `audit_events` ADD `policies` text;--> statement-breakpoint
ALTER TABLE `tasks` ADD `tokens_minted` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `tasks` ADD `max_tokens` integer;--> statement-breakpoint
ALTER TABLE `tasks` ADD `user_claims` text;--> statement-breakpoint
ALTER TABLE `tasks` ADD `approval_expires_at` integer;--> statement-breakpoint
ALTER TABLE `tokens` ADD `attestation` text;--> statement-breakpoint
UPDATE `tasks` SET `tokens_minted` = (SELECT count(*) FROM `tokens` WHERE `tokens`.`task_id` = `tasks`.`id`);
