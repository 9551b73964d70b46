CREATE TABLE `audit_events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`at` integer NOT NULL,
	`action` text NOT NULL,
	`decision` text NOT NULL,
	`reason` text NOT NULL,
	`error` text,
	`user_sub` text,
	`workload_id` text,
	`task_id` text,
	`jti` text,
	`resource` text
);
--> statement-breakpoint
CREATE INDEX `audit_at_idx` ON `audit_events` (`at`);--> statement-breakpoint
CREATE INDEX `audit_task_idx` ON `audit_events` (`task_id`);--> statement-breakpoint
CREATE TABLE `revocation_events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`at` integer NOT NULL,
	`kind` text NOT NULL,
	`task_id` text,
	`jti` text,
	`relevant_until` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `revocation_at_idx` ON `revocation_events` (`at`);--> statement-breakpoint
CREATE TABLE `signing_keys` (
	`kid` text PRIMARY KEY NOT NULL,
	`alg` text NOT NULL,
	`public_jwk` text NOT NULL,
	`private_jwe` text NOT NULL,
	`state` text NOT NULL,
	`created_at` integer NOT NULL,
	`activated_at` integer,
	`retired_at` integer,
	`publish_until` integer
);
--> statement-breakpoint
CREATE TABLE `tasks` (
	`id` text PRIMARY KEY NOT NULL,
	`user_sub` text NOT NULL,
	`subject_issuer` text NOT NULL,
	`sid` text,
	`workload_id` text NOT NULL,
	`purpose` text NOT NULL,
	`resources` text NOT NULL,
	`status` text NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL,
	`ended_at` integer,
	`end_reason` text
);
--> statement-breakpoint
CREATE INDEX `tasks_user_idx` ON `tasks` (`user_sub`,`created_at`);--> statement-breakpoint
CREATE INDEX `tasks_workload_idx` ON `tasks` (`workload_id`);--> statement-breakpoint
CREATE TABLE `tokens` (
	`jti` text PRIMARY KEY NOT NULL,
	`task_id` text NOT NULL,
	`sub` text NOT NULL,
	`workload_id` text NOT NULL,
	`aud` text NOT NULL,
	`scope` text NOT NULL,
	`iat` integer NOT NULL,
	`exp` integer NOT NULL,
	`status` text NOT NULL,
	`revoked_at` integer,
	`cnf_jkt` text
);
--> statement-breakpoint
CREATE INDEX `tokens_task_idx` ON `tokens` (`task_id`);--> statement-breakpoint
CREATE INDEX `tokens_exp_idx` ON `tokens` (`exp`);