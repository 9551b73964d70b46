CREATE TABLE `broker_meta` (
	`name` text PRIMARY KEY NOT NULL,
	`value` text NOT NULL
);
--> statement-breakpoint
ALTER TABLE `revocation_events` ADD `subject_issuer` text;--> statement-breakpoint
ALTER TABLE `revocation_events` ADD `kid` text;--> statement-breakpoint
ALTER TABLE `tokens` ADD `kid` text;--> statement-breakpoint
CREATE INDEX `tasks_expires_idx` ON `tasks` (`expires_at`);--> statement-breakpoint
UPDATE `revocation_events` SET `subject_issuer` = (SELECT `subject_issuer` FROM `tasks` WHERE `tasks`.`id` = `revocation_events`.`task_id`) WHERE `subject_issuer` IS NULL AND `task_id` IS NOT NULL;--> statement-breakpoint
UPDATE `revocation_events` SET `subject_issuer` = (SELECT `subject_issuer` FROM `revoked_sessions` WHERE `revoked_sessions`.`sid` = `revocation_events`.`sid` AND `revoked_sessions`.`at` = `revocation_events`.`at` LIMIT 1) WHERE `subject_issuer` IS NULL AND `kind` = 'session_revoked';
