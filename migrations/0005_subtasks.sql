ALTER TABLE `tasks` ADD `parent_task_id` text;--> statement-breakpoint
ALTER TABLE `tasks` ADD `depth` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `tasks` ADD `root_task_id` text;--> statement-breakpoint
ALTER TABLE `tasks` ADD `session_started_at` integer;--> statement-breakpoint
ALTER TABLE `tasks` ADD `session_expires_at` integer;--> statement-breakpoint
CREATE INDEX `tasks_parent_idx` ON `tasks` (`parent_task_id`);--> statement-breakpoint
CREATE INDEX `tasks_root_idx` ON `tasks` (`root_task_id`);