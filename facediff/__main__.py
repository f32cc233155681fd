from facediff.cli import main

raise SystemExit(main())
