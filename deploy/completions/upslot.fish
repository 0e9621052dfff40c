# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_upslot_global_optspecs
    string join \n h/help V/version
end

function __fish_upslot_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_upslot_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_upslot_using_subcommand
    set -l cmd (__fish_upslot_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c upslot -n "__fish_upslot_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c upslot -n "__fish_upslot_needs_command" -s V -l version -d 'Print version'
complete -c upslot -n "__fish_upslot_needs_command" -f -a "serve" -d 'Run the service (built-in defaults when no file is given)'
complete -c upslot -n "__fish_upslot_needs_command" -f -a "sign" -d 'Print a signed PUT URL (and, for jwt, the Authorization header)'
complete -c upslot -n "__fish_upslot_needs_command" -f -a "check-config" -d 'Validate a configuration file, as `serve` would read it at start'
complete -c upslot -n "__fish_upslot_needs_command" -f -a "index" -d 'Rebuild the index from the store alone (after losing the database)'
complete -c upslot -n "__fish_upslot_needs_command" -f -a "migrate" -d 'Copy an installation on one machine (its data directory) into the storage and index that the configuration names; run it again to resume'
complete -c upslot -n "__fish_upslot_needs_command" -f -a "files" -d 'See, export and erase stored files (works while the service runs)'
complete -c upslot -n "__fish_upslot_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c upslot -n "__fish_upslot_needs_command" -f -a "man" -d 'Print the manual page (roff), or write one page per command into a directory'
complete -c upslot -n "__fish_upslot_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c upslot -n "__fish_upslot_using_subcommand serve" -s c -l config -d 'Configuration file (TOML); without it, the built-in defaults' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand serve" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand sign" -s c -l config -d 'Configuration file (TOML); without it, the built-in defaults' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand sign" -l scheme -d 'Signing scheme' -r -f -a "v1\t''
v2\t''
token\t''
jwt\t''"
complete -c upslot -n "__fish_upslot_using_subcommand sign" -l size -d 'Size in bytes that the upload must have' -r
complete -c upslot -n "__fish_upslot_using_subcommand sign" -l type -d 'Content type to sign (v2, token) or announce (jwt)' -r
complete -c upslot -n "__fish_upslot_using_subcommand sign" -l base-url -d 'Public base URL [default: http://<listen><base_path>]' -r
complete -c upslot -n "__fish_upslot_using_subcommand sign" -l user -d 'Uploader JID for the jwt `sub` claim' -r
complete -c upslot -n "__fish_upslot_using_subcommand sign" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand index; and not __fish_seen_subcommand_from rebuild help" -s c -l config -d 'Configuration file (TOML); without it, the built-in defaults' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand index; and not __fish_seen_subcommand_from rebuild help" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand index; and not __fish_seen_subcommand_from rebuild help" -f -a "rebuild" -d 'Record every file the store holds that the index lacks'
complete -c upslot -n "__fish_upslot_using_subcommand index; and not __fish_seen_subcommand_from rebuild help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c upslot -n "__fish_upslot_using_subcommand index; and __fish_seen_subcommand_from rebuild" -s c -l config -d 'Configuration file (TOML); without it, the built-in defaults' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand index; and __fish_seen_subcommand_from rebuild" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand index; and __fish_seen_subcommand_from help" -f -a "rebuild" -d 'Record every file the store holds that the index lacks'
complete -c upslot -n "__fish_upslot_using_subcommand index; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c upslot -n "__fish_upslot_using_subcommand migrate" -s c -l config -d 'The configuration of the new storage and index (s3 + postgres)' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand migrate" -l from -d 'The old installation\'s data directory' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand migrate" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand files; and not __fish_seen_subcommand_from list show export delete help" -s c -l config -d 'Configuration file (TOML); without it, the built-in defaults' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand files; and not __fish_seen_subcommand_from list show export delete help" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand files; and not __fish_seen_subcommand_from list show export delete help" -f -a "list" -d 'List files, oldest first'
complete -c upslot -n "__fish_upslot_using_subcommand files; and not __fish_seen_subcommand_from list show export delete help" -f -a "show" -d 'Everything stored about one file (URL, request path or signed path)'
complete -c upslot -n "__fish_upslot_using_subcommand files; and not __fish_seen_subcommand_from list show export delete help" -f -a "export" -d 'Every fact stored about a user\'s files, as JSON; with --archive, the files too'
complete -c upslot -n "__fish_upslot_using_subcommand files; and not __fish_seen_subcommand_from list show export delete help" -f -a "delete" -d 'Delete files by path, or all of a user\'s files'
complete -c upslot -n "__fish_upslot_using_subcommand files; and not __fish_seen_subcommand_from list show export delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from list" -l user -d 'Only this user\'s files (bare JID)' -r
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from list" -s c -l config -d 'Configuration file (TOML); without it, the built-in defaults' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from list" -l by-node -d 'With --user: also uploads whose ejabberd URL names only the JID\'s node (`jid_in_url: node`), which on a server with several domains may be another domain\'s user\'s'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from list" -l json -d 'JSON instead of one line per file'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from show" -s c -l config -d 'Configuration file (TOML); without it, the built-in defaults' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from export" -l user -d 'The user (bare JID) whose files to export' -r
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from export" -l archive -d 'Write a tar archive (.tar, or gzip-compressed for .tar.gz and .tgz) holding export.json and every file under files/; refuses to overwrite an existing file. Each file is checked against its stored SHA-256 while it is written' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from export" -s c -l config -d 'Configuration file (TOML); without it, the built-in defaults' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from export" -l by-node -d 'With --user: also uploads whose ejabberd URL names only the JID\'s node (`jid_in_url: node`), which on a server with several domains may be another domain\'s user\'s'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from delete" -l user -d 'Delete every file of this user (bare JID)' -r
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from delete" -s c -l config -d 'Configuration file (TOML); without it, the built-in defaults' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from delete" -l by-node -d 'With --user: also uploads whose ejabberd URL names only the JID\'s node (`jid_in_url: node`), which on a server with several domains may be another domain\'s user\'s'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from help" -f -a "list" -d 'List files, oldest first'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from help" -f -a "show" -d 'Everything stored about one file (URL, request path or signed path)'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from help" -f -a "export" -d 'Every fact stored about a user\'s files, as JSON; with --archive, the files too'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete files by path, or all of a user\'s files'
complete -c upslot -n "__fish_upslot_using_subcommand files; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c upslot -n "__fish_upslot_using_subcommand completions" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand man" -l dir -d 'Write upslot.1 and a page per subcommand (upslot-files-export.1, ...) here instead of printing upslot.1' -r -F
complete -c upslot -n "__fish_upslot_using_subcommand man" -s h -l help -d 'Print help'
complete -c upslot -n "__fish_upslot_using_subcommand help; and not __fish_seen_subcommand_from serve sign check-config index migrate files completions man help" -f -a "serve" -d 'Run the service (built-in defaults when no file is given)'
complete -c upslot -n "__fish_upslot_using_subcommand help; and not __fish_seen_subcommand_from serve sign check-config index migrate files completions man help" -f -a "sign" -d 'Print a signed PUT URL (and, for jwt, the Authorization header)'
complete -c upslot -n "__fish_upslot_using_subcommand help; and not __fish_seen_subcommand_from serve sign check-config index migrate files completions man help" -f -a "check-config" -d 'Validate a configuration file, as `serve` would read it at start'
complete -c upslot -n "__fish_upslot_using_subcommand help; and not __fish_seen_subcommand_from serve sign check-config index migrate files completions man help" -f -a "index" -d 'Rebuild the index from the store alone (after losing the database)'
complete -c upslot -n "__fish_upslot_using_subcommand help; and not __fish_seen_subcommand_from serve sign check-config index migrate files completions man help" -f -a "migrate" -d 'Copy an installation on one machine (its data directory) into the storage and index that the configuration names; run it again to resume'
complete -c upslot -n "__fish_upslot_using_subcommand help; and not __fish_seen_subcommand_from serve sign check-config index migrate files completions man help" -f -a "files" -d 'See, export and erase stored files (works while the service runs)'
complete -c upslot -n "__fish_upslot_using_subcommand help; and not __fish_seen_subcommand_from serve sign check-config index migrate files completions man help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c upslot -n "__fish_upslot_using_subcommand help; and not __fish_seen_subcommand_from serve sign check-config index migrate files completions man help" -f -a "man" -d 'Print the manual page (roff), or write one page per command into a directory'
complete -c upslot -n "__fish_upslot_using_subcommand help; and not __fish_seen_subcommand_from serve sign check-config index migrate files completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c upslot -n "__fish_upslot_using_subcommand help; and __fish_seen_subcommand_from index" -f -a "rebuild" -d 'Record every file the store holds that the index lacks'
complete -c upslot -n "__fish_upslot_using_subcommand help; and __fish_seen_subcommand_from files" -f -a "list" -d 'List files, oldest first'
complete -c upslot -n "__fish_upslot_using_subcommand help; and __fish_seen_subcommand_from files" -f -a "show" -d 'Everything stored about one file (URL, request path or signed path)'
complete -c upslot -n "__fish_upslot_using_subcommand help; and __fish_seen_subcommand_from files" -f -a "export" -d 'Every fact stored about a user\'s files, as JSON; with --archive, the files too'
complete -c upslot -n "__fish_upslot_using_subcommand help; and __fish_seen_subcommand_from files" -f -a "delete" -d 'Delete files by path, or all of a user\'s files'
