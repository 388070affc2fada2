module tide

go 1.26.8
