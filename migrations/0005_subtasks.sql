ALTER TABLE `tasks` ADD `parent_task_id` text;--> statement-breakpoint
ALTER TABLE `tasks` ADD `depth` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX `tasks_parent_idx` ON `tasks` (`parent_task_id`);