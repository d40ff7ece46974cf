"""The settings systemd 252 knows, per section of the unit types Flotilla deploys.

Data, not logic (`engine.unit_checks` uses it), and long for that reason alone. Copied
from systemd 252's own parser table (the `Section.Key` strings of load-fragment-gperf in
libsystemd-core-252.so, Debian 12's systemd, which Amazon Linux 2023 also ships), so a
key that is missing here is one systemd 252 ignores with "Unknown key". Newer systemd
releases add keys: a unit that uses one is refused by `revision add` unless `--force`
says the workers run a systemd that knows it. [Install] is read by systemctl, not the
manager; its keys are the table's and UpheldBy= (systemd.unit(5), since 249).
"""

from __future__ import annotations

from collections.abc import Mapping


def _keys(text: str) -> frozenset[str]:
    return frozenset(text.split())


KNOWN_KEYS: Mapping[str, frozenset[str]] = {
    "Unit": _keys(
        """
        After AllowIsolate AssertACPower AssertArchitecture AssertCPUFeature AssertCPUPressure
        AssertCPUs AssertCapability AssertControlGroupController AssertCredential
        AssertDirectoryNotEmpty AssertEnvironment AssertFileIsExecutable AssertFileNotEmpty
        AssertFirstBoot AssertGroup AssertHost AssertIOPressure AssertKernelCommandLine
        AssertKernelVersion AssertMemory AssertMemoryPressure AssertNeedsUpdate AssertOSRelease
        AssertPathExists AssertPathExistsGlob AssertPathIsDirectory AssertPathIsEncrypted
        AssertPathIsMountPoint AssertPathIsReadWrite AssertPathIsSymbolicLink AssertSecurity
        AssertUser AssertVirtualization Before BindTo BindsTo CollectMode ConditionACPower
        ConditionArchitecture ConditionCPUFeature ConditionCPUPressure ConditionCPUs
        ConditionCapability ConditionControlGroupController ConditionCredential
        ConditionDirectoryNotEmpty ConditionEnvironment ConditionFileIsExecutable
        ConditionFileNotEmpty ConditionFirmware ConditionFirstBoot ConditionGroup ConditionHost
        ConditionIOPressure ConditionKernelCommandLine ConditionKernelVersion ConditionMemory
        ConditionMemoryPressure ConditionNeedsUpdate ConditionOSRelease ConditionPathExists
        ConditionPathExistsGlob ConditionPathIsDirectory ConditionPathIsEncrypted
        ConditionPathIsMountPoint ConditionPathIsReadWrite ConditionPathIsSymbolicLink
        ConditionSecurity ConditionUser ConditionVirtualization Conflicts DefaultDependencies
        Description Documentation FailureAction FailureActionExitStatus IgnoreOnIsolate
        IgnoreOnSnapshot JobRunningTimeoutSec JobTimeoutAction JobTimeoutRebootArgument
        JobTimeoutSec JoinsNamespaceOf OnFailure OnFailureIsolate OnFailureJobMode OnSuccess
        OnSuccessJobMode PartOf PropagateReloadFrom PropagateReloadTo PropagatesReloadTo
        PropagatesStopTo RebootArgument RefuseManualStart RefuseManualStop ReloadPropagatedFrom
        Requires RequiresMountsFor RequiresOverridable Requisite RequisiteOverridable SourcePath
        StartLimitAction StartLimitBurst StartLimitInterval StartLimitIntervalSec
        StopPropagatedFrom StopWhenUnneeded SuccessAction SuccessActionExitStatus Upholds Wants
        """
    ),
    "Install": _keys(
        """
        Alias Also DefaultInstance RequiredBy UpheldBy WantedBy
        """
    ),
    "Service": _keys(
        """
        AllowedCPUs AllowedMemoryNodes AmbientCapabilities AppArmorProfile BPFProgram BindPaths
        BindReadOnlyPaths BlockIOAccounting BlockIODeviceWeight BlockIOReadBandwidth
        BlockIOWeight BlockIOWriteBandwidth BusName BusPolicy CPUAccounting CPUAffinity CPUQuota
        CPUQuotaPeriodSec CPUSchedulingPolicy CPUSchedulingPriority CPUSchedulingResetOnFork
        CPUShares CPUWeight CacheDirectory CacheDirectoryMode Capabilities CapabilityBoundingSet
        ConfigurationDirectory ConfigurationDirectoryMode CoredumpFilter DefaultMemoryLow
        DefaultMemoryMin Delegate DeviceAllow DevicePolicy DisableControllers DynamicUser
        Environment EnvironmentFile ExecCondition ExecPaths ExecReload ExecSearchPath ExecStart
        ExecStartPost ExecStartPre ExecStop ExecStopPost ExitType ExtensionDirectories
        ExtensionImages FailureAction FileDescriptorStoreMax FinalKillSignal Group GuessMainPID
        IOAccounting IODeviceLatencyTargetSec IODeviceWeight IOReadBandwidthMax IOReadIOPSMax
        IOSchedulingClass IOSchedulingPriority IOWeight IOWriteBandwidthMax IOWriteIOPSMax
        IPAccounting IPAddressAllow IPAddressDeny IPCNamespacePath IPEgressFilterPath
        IPIngressFilterPath IgnoreSIGPIPE InaccessibleDirectories InaccessiblePaths KeyringMode
        KillMode KillSignal LimitAS LimitCORE LimitCPU LimitDATA LimitFSIZE LimitLOCKS
        LimitMEMLOCK LimitMSGQUEUE LimitNICE LimitNOFILE LimitNPROC LimitRSS LimitRTPRIO
        LimitRTTIME LimitSIGPENDING LimitSTACK LoadCredential LoadCredentialEncrypted
        LockPersonality LogExtraFields LogLevelMax LogNamespace LogRateLimitBurst
        LogRateLimitIntervalSec LogsDirectory LogsDirectoryMode ManagedOOMMemoryPressure
        ManagedOOMMemoryPressureLimit ManagedOOMPreference ManagedOOMSwap MemoryAccounting
        MemoryDenyWriteExecute MemoryHigh MemoryLimit MemoryLow MemoryMax MemoryMin
        MemorySwapMax MountAPIVFS MountFlags MountImages NUMAMask NUMAPolicy NetClass
        NetworkNamespacePath Nice NoExecPaths NoNewPrivileges NonBlocking NotifyAccess OOMPolicy
        OOMScoreAdjust PAMName PIDFile PassEnvironment PermissionsStartOnly Personality
        PrivateDevices PrivateIPC PrivateMounts PrivateNetwork PrivateTmp PrivateUsers
        ProcSubset ProtectClock ProtectControlGroups ProtectHome ProtectHostname
        ProtectKernelLogs ProtectKernelModules ProtectKernelTunables ProtectProc ProtectSystem
        ReadOnlyDirectories ReadOnlyPaths ReadWriteDirectories ReadWritePaths RebootArgument
        RemainAfterExit RemoveIPC Restart RestartForceExitStatus RestartKillSignal
        RestartPreventExitStatus RestartSec RestrictAddressFamilies RestrictFileSystems
        RestrictNamespaces RestrictNetworkInterfaces RestrictRealtime RestrictSUIDSGID
        RootDirectory RootDirectoryStartOnly RootHash RootHashSignature RootImage
        RootImageOptions RootVerity RuntimeDirectory RuntimeDirectoryMode
        RuntimeDirectoryPreserve RuntimeMaxSec RuntimeRandomizedExtraSec SELinuxContext
        SecureBits SendSIGHUP SendSIGKILL SetCredential SetCredentialEncrypted Slice
        SmackProcessLabel SocketBindAllow SocketBindDeny Sockets StandardError StandardInput
        StandardInputData StandardInputText StandardOutput StartLimitAction StartLimitBurst
        StartLimitInterval StartupAllowedCPUs StartupAllowedMemoryNodes StartupBlockIOWeight
        StartupCPUShares StartupCPUWeight StartupIOWeight StateDirectory StateDirectoryMode
        SuccessExitStatus SupplementaryGroups SysVStartPriority SyslogFacility SyslogIdentifier
        SyslogLevel SyslogLevelPrefix SystemCallArchitectures SystemCallErrorNumber
        SystemCallFilter SystemCallLog TTYColumns TTYPath TTYReset TTYRows TTYVHangup
        TTYVTDisallocate TasksAccounting TasksMax TemporaryFileSystem TimeoutAbortSec
        TimeoutCleanSec TimeoutSec TimeoutStartFailureMode TimeoutStartSec
        TimeoutStopFailureMode TimeoutStopSec TimerSlackNSec Type UMask USBFunctionDescriptors
        USBFunctionStrings UnsetEnvironment User UtmpIdentifier UtmpMode WatchdogSec
        WatchdogSignal WorkingDirectory
        """
    ),
    "Socket": _keys(
        """
        Accept AllowedCPUs AllowedMemoryNodes AmbientCapabilities AppArmorProfile BPFProgram
        Backlog BindPaths BindReadOnlyPaths BindToDevice BlockIOAccounting BlockIODeviceWeight
        BlockIOReadBandwidth BlockIOWeight BlockIOWriteBandwidth Broadcast CPUAccounting
        CPUAffinity CPUQuota CPUQuotaPeriodSec CPUSchedulingPolicy CPUSchedulingPriority
        CPUSchedulingResetOnFork CPUShares CPUWeight CacheDirectory CacheDirectoryMode
        Capabilities CapabilityBoundingSet ConfigurationDirectory ConfigurationDirectoryMode
        CoredumpFilter DefaultMemoryLow DefaultMemoryMin DeferAcceptSec Delegate DeviceAllow
        DevicePolicy DirectoryMode DisableControllers DynamicUser Environment EnvironmentFile
        ExecPaths ExecSearchPath ExecStartPost ExecStartPre ExecStopPost ExecStopPre
        ExtensionDirectories ExtensionImages FileDescriptorName FinalKillSignal FlushPending
        FreeBind Group IOAccounting IODeviceLatencyTargetSec IODeviceWeight IOReadBandwidthMax
        IOReadIOPSMax IOSchedulingClass IOSchedulingPriority IOWeight IOWriteBandwidthMax
        IOWriteIOPSMax IPAccounting IPAddressAllow IPAddressDeny IPCNamespacePath
        IPEgressFilterPath IPIngressFilterPath IPTOS IPTTL IgnoreSIGPIPE InaccessibleDirectories
        InaccessiblePaths KeepAlive KeepAliveIntervalSec KeepAliveProbes KeepAliveTimeSec
        KeyringMode KillMode KillSignal LimitAS LimitCORE LimitCPU LimitDATA LimitFSIZE
        LimitLOCKS LimitMEMLOCK LimitMSGQUEUE LimitNICE LimitNOFILE LimitNPROC LimitRSS
        LimitRTPRIO LimitRTTIME LimitSIGPENDING LimitSTACK ListenDatagram ListenFIFO
        ListenMessageQueue ListenNetlink ListenSequentialPacket ListenSpecial ListenStream
        ListenUSBFunction LoadCredential LoadCredentialEncrypted LockPersonality LogExtraFields
        LogLevelMax LogNamespace LogRateLimitBurst LogRateLimitIntervalSec LogsDirectory
        LogsDirectoryMode ManagedOOMMemoryPressure ManagedOOMMemoryPressureLimit
        ManagedOOMPreference ManagedOOMSwap Mark MaxConnections MaxConnectionsPerSource
        MemoryAccounting MemoryDenyWriteExecute MemoryHigh MemoryLimit MemoryLow MemoryMax
        MemoryMin MemorySwapMax MessageQueueMaxMessages MessageQueueMessageSize MountAPIVFS
        MountFlags MountImages NUMAMask NUMAPolicy NetClass NetworkNamespacePath Nice NoDelay
        NoExecPaths NoNewPrivileges OOMScoreAdjust PAMName PassCredentials PassEnvironment
        PassPacketInfo PassSecurity Personality PipeSize Priority PrivateDevices PrivateIPC
        PrivateMounts PrivateNetwork PrivateTmp PrivateUsers ProcSubset ProtectClock
        ProtectControlGroups ProtectHome ProtectHostname ProtectKernelLogs ProtectKernelModules
        ProtectKernelTunables ProtectProc ProtectSystem ReadOnlyDirectories ReadOnlyPaths
        ReadWriteDirectories ReadWritePaths ReceiveBuffer RemoveIPC RemoveOnStop
        RestartKillSignal RestrictAddressFamilies RestrictFileSystems RestrictNamespaces
        RestrictNetworkInterfaces RestrictRealtime RestrictSUIDSGID ReusePort RootDirectory
        RootHash RootHashSignature RootImage RootImageOptions RootVerity RuntimeDirectory
        RuntimeDirectoryMode RuntimeDirectoryPreserve SELinuxContext SELinuxContextFromNet
        SecureBits SendBuffer SendSIGHUP SendSIGKILL Service SetCredential
        SetCredentialEncrypted Slice SmackLabel SmackLabelIPIn SmackLabelIPOut SmackProcessLabel
        SocketBindAllow SocketBindDeny SocketGroup SocketMode SocketProtocol SocketUser
        StandardError StandardInput StandardInputData StandardInputText StandardOutput
        StartupAllowedCPUs StartupAllowedMemoryNodes StartupBlockIOWeight StartupCPUShares
        StartupCPUWeight StartupIOWeight StateDirectory StateDirectoryMode SupplementaryGroups
        Symlinks SyslogFacility SyslogIdentifier SyslogLevel SyslogLevelPrefix
        SystemCallArchitectures SystemCallErrorNumber SystemCallFilter SystemCallLog
        TCPCongestion TTYColumns TTYPath TTYReset TTYRows TTYVHangup TTYVTDisallocate
        TasksAccounting TasksMax TemporaryFileSystem TimeoutCleanSec TimeoutSec TimerSlackNSec
        Timestamping Transparent TriggerLimitBurst TriggerLimitIntervalSec UMask
        UnsetEnvironment User UtmpIdentifier UtmpMode WatchdogSignal WorkingDirectory Writable
        """
    ),
    "Timer": _keys(
        """
        AccuracySec FixedRandomDelay OnActiveSec OnBootSec OnCalendar OnClockChange OnStartupSec
        OnTimezoneChange OnUnitActiveSec OnUnitInactiveSec Persistent RandomizedDelaySec
        RemainAfterElapse Unit WakeSystem
        """
    ),
}
