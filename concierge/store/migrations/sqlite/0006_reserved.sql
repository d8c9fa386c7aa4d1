-- Reserved: keeps the numbering contiguous (another change takes this number).
SELECT 1;
