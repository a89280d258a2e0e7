-- The tunescout user creates its shard and result databases on first start.
GRANT ALL PRIVILEGES ON `tunescout%`.* TO 'tunescout'@'%';
